"""SIGKILL the driver mid-study, then `lbt-study resume`: nothing lost, nothing run twice.

A driver can also die between writing a trial's row and telling Optuna (rows are written
first): resume then tells Optuna what the runner would have (lbt_study.study.outcomes), both values
for a multi-objective study. That window is made deterministic by putting the recorded trial
back to RUNNING in the SQLite database, as the dead driver would have left it.
"""

import contextlib
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from lbt_study import load_results
from lbt_study.records.results import TRIALS_COLUMNS, write_table

SPEC = """
from lbt_study import Study

def space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}

study = Study(name="killed", space=space, trials=7, max_concurrent_trials=1,
              fixed={"model": "mlp", "norm": "layer", "epochs": 3, "gns_probe_examples": 256})
"""


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lbt_study.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def finished_rows(run_dir):
    path = run_dir / "trials.parquet"  # the bytes at once: the driver replaces the file
    return len(pd.read_parquet(io.BytesIO(path.read_bytes()))) if path.is_file() else 0


def run_then_kill(tmp_path, spec_source, rows=3):
    """`lbt-study run` in a subprocess, SIGKILLed once ``rows`` trials are in the table."""
    spec = tmp_path / "spec.py"
    spec.write_text(spec_source)
    run_dir = tmp_path / "run"
    driver = cli("run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2")
    try:
        deadline = time.time() + 240
        while finished_rows(run_dir) < rows and time.time() < deadline:
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only
        driver.wait()
    finally:  # then whatever the dead driver left behind (its local Ray)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    return run_dir


@pytest.mark.ray
def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    run_dir = run_then_kill(tmp_path, SPEC)
    before, _ = load_results(run_dir)
    assert 3 <= len(before) < 7
    dead = json.loads((run_dir / "driver.lock").read_text())["pid"]  # the killed driver's

    resumed = cli("resume", str(run_dir), "--num-cpus", "2")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"taking over from a driver that is no longer running (`lbt-study run`, pid {dead} " \
        "on host" in out  # the stale lock, taken over
    assert f"{len(before)} of 7 trials finished" in out
    assert not (run_dir / "driver.lock").exists()

    after, history = load_results(run_dir)
    assert len(after) == 7  # the number asked for
    assert after["optuna_trial_number"].is_unique and after["trial_id"].is_unique
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    pd.testing.assert_series_equal(kept["final_objective"].reset_index(drop=True),
                                   before["final_objective"].reset_index(drop=True))
    assert set(history["trial_id"]) == set(after["trial_id"])  # every trial has its history
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 7
    assert optuna.trial.TrialState.RUNNING not in states
    interrupted = [t for t in study.trials if t.user_attrs.get("status") == "interrupted"]
    assert len(study.trials) == 7 + len(interrupted)
    completed_numbers = {t.number for t in study.trials
                         if t.state == optuna.trial.TrialState.COMPLETE}
    assert completed_numbers == set(after["optuna_trial_number"])


MULTI_SPEC = SPEC.replace('name="killed"', 'name="killed-mo"').replace(
    "max_concurrent_trials=1,", "max_concurrent_trials=1, multi_objective=True, target=0.5,")


def reopen(run_dir, study_name, number):
    """Put a finished Optuna trial back to RUNNING, its values gone: what a driver that died
    after writing the trial's row, before telling Optuna, leaves in the database."""
    with contextlib.closing(sqlite3.connect(run_dir / "optuna.db")) as con, con:
        (trial_id,) = con.execute(
            "SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = ? AND t.number = ?", (study_name, number)).fetchone()
        con.execute("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL "
                    "WHERE trial_id = ?", (trial_id,))
        con.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert study.trials[number].state == TrialState.RUNNING


def expected_values(row):
    seconds = row["seconds_to_target"]
    return [row["final_objective"], seconds if math.isfinite(seconds) else math.inf]


def assert_told_as_recorded(study, table):
    """Every recorded trial finished in Optuna as the table says; none RUNNING."""
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    by_number = {t.number: t for t in study.trials}
    for _, row in table.iterrows():
        trial = by_number[row["optuna_trial_number"]]
        assert row["status"] == "ok", row.to_dict()
        assert trial.state == TrialState.COMPLETE
        assert trial.values == pytest.approx(expected_values(row))
        assert trial.user_attrs["tune_trial_id"] == row["trial_id"]


@pytest.mark.ray
@pytest.mark.slow  # 55 s; the single-objective SIGKILL test above runs by default, and
# test_resume_tells_a_recorded_multi_objective_trial_both_values covers both values
def test_multi_objective_sigkill_between_row_and_optuna_then_resume(tmp_path):
    run_dir = run_then_kill(tmp_path, MULTI_SPEC)
    before, _ = load_results(run_dir)
    assert 3 <= len(before) < 7
    last = before.iloc[-1]  # recorded, then (as if) the driver died before telling Optuna
    reopen(run_dir, "killed-mo", int(last["optuna_trial_number"]))

    resumed = cli("resume", str(run_dir), "--num-cpus", "2", "--no-report")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"{len(before)} of 7 trials finished" in out

    after, history = load_results(run_dir)
    assert len(after) == 7  # 0 lost
    assert after["optuna_trial_number"].is_unique and after["trial_id"].is_unique  # 0 twice
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    pd.testing.assert_series_equal(kept["final_objective"].reset_index(drop=True),
                                   before["final_objective"].reset_index(drop=True))
    assert set(history["trial_id"]) == set(after["trial_id"])
    study = optuna.load_study(study_name="killed-mo",
                              storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert len(study.directions) == 2
    assert_told_as_recorded(study, after)
    interrupted = [t for t in study.trials if t.user_attrs.get("status") == "interrupted"]
    assert all(t.state == TrialState.FAIL for t in interrupted)
    assert len(study.trials) == 7 + len(interrupted)


def recorded_run(tmp_path, told):
    """A multi-objective run directory as `lbt-study run` leaves it, built without Ray: 3
    trials in the tables, the first ``told`` of them told to Optuna, the rest RUNNING."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.py").write_text(MULTI_SPEC.replace("trials=7", "trials=3"))
    (run_dir / "study.json").write_text(json.dumps({
        "name": "killed-mo", "trials": 3, "trials_per_search": 3, "protocol": "joint",
        "searches": ["killed-mo"], "multi_objective": True, "objective": "val_accuracy",
        "objective_direction": "maximize", "target": 0.5}))
    study = optuna.create_study(study_name="killed-mo", directions=["maximize", "minimize"],
                                storage=f"sqlite:///{run_dir / 'optuna.db'}")
    results = [(0.8, 2.0), (0.7, math.nan), (0.9, 1.5)]  # NaN: target never reached
    rows = []
    for number, (objective, seconds) in enumerate(results):
        trial = study.ask()
        trial.suggest_categorical("batch_size", [32, 64, 128])
        trial.suggest_float("lr", 1e-3, 0.3, log=True)
        trial.set_user_attr("tune_trial_id", f"t{number}")
        if number < told:
            study.tell(trial, [objective, math.inf if math.isnan(seconds) else seconds])
        rows.append({"trial_id": f"t{number}", "optuna_study": "killed-mo",
                     "optuna_trial_number": number, "status": "ok", "batch_size": 32,
                     "norm": "layer", "final_objective": objective,
                     "seconds_to_target": seconds})
    write_table(pd.DataFrame({"trial_id": [r["trial_id"] for r in rows], "step": 0}),
                run_dir, "history")
    write_table(pd.DataFrame(rows).reindex(columns=list(TRIALS_COLUMNS)), run_dir, "trials")
    return run_dir


def test_resume_tells_a_recorded_multi_objective_trial_both_values(tmp_path):
    """No Ray: every trial is in the table, so nothing is left to run; the ones the driver
    never told (2 RUNNING) must be told both objectives (one value for two was refused)."""
    run_dir = recorded_run(tmp_path, told=1)
    table = pd.read_parquet(run_dir / "trials.parquet")
    resumed = cli("resume", str(run_dir), "--no-report")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "3 of 3 trials finished, 0 interrupted (will be replaced), 0 to run" in out
    study = optuna.load_study(study_name="killed-mo",
                              storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert len(study.trials) == 3
    assert_told_as_recorded(study, table)
    assert [t.values[1] for t in study.trials] == [2.0, math.inf, 1.5]
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "trials.parquet"), table)
