"""SIGKILL the driver mid-study, then `lbt-study resume`: nothing lost, nothing run twice."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from lbt_study import load_results

pytestmark = pytest.mark.ray

SPEC = """
from lbt_study import Study

def space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}

study = Study(name="killed", space=space, trials=7, max_concurrent_trials=1,
              fixed={"model": "mlp", "norm": "layer", "epochs": 3})
"""


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lbt_study.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def finished_rows(run_dir):
    path = run_dir / "trials.parquet"
    return len(pd.read_parquet(path)) if path.is_file() else 0


def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    run_dir = tmp_path / "run"
    driver = cli("run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2")
    try:
        deadline = time.time() + 240
        while finished_rows(run_dir) < 3 and time.time() < deadline:
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only
        driver.wait()
    finally:  # then whatever the dead driver left behind (its local Ray)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    before, _ = load_results(run_dir)
    assert 3 <= len(before) < 7

    resumed = cli("resume", str(run_dir), "--num-cpus", "2")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"{len(before)} of 7 trials finished" in out

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
