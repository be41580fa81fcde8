"""One live driver per run directory (lbt_study.records.lock): a second `run` or `resume`
is refused in one line naming the holder; a dead driver's lock is taken over."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from test_cli_errors import cli, finished_run, one_line

from lbt_study.errors import UserError
from lbt_study.records.lock import LOCK, acquire, live_holder, read_holder

SPEC = """
from lbt_study import Study

def space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64]),
            "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}

study = Study(name="owned", space=space, trials=4, max_concurrent_trials=1,
              fixed={"model": "mlp", "norm": "layer", "epochs": 30, "gns_probe_examples": 256})
"""

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom lbt_study.records.lock import acquire\n"
        "lock = acquire(Path(sys.argv[1]), 'run')\nprint('held', flush=True)\ntime.sleep(600)\n")


@contextlib.contextmanager
def holder_process(run_dir):
    """A real process that holds ``run_dir``'s lock until it is SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def started(run_dir):
    """The driver holds the run directory and has written study.json: the study is under
    way (Ray is starting; the trials follow)."""
    return (run_dir / "study.json").is_file() and (run_dir / LOCK).is_file()


@pytest.mark.ray
@pytest.mark.slow  # a real 4-trial study on a local Ray, with a second driver beside it
def test_a_second_driver_is_refused_while_the_first_runs(tmp_path):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "lbt_study.cli", "run", str(spec),
                              "--run-dir", str(run_dir), "--num-cpus", "2", "--no-report"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 300
        while not started(run_dir) and time.time() < deadline:
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.2)
        assert first.poll() is None, "the study ended before the second driver came"
        refused = one_line(cli("resume", run_dir, "--num-cpus", "2"), "is in use by a live "
                           "driver", f"pid {first.pid} on host {socket.gethostname()}",
                           "last wrote", "s ago", "wait for it to finish")
        print(refused)
        again = one_line(cli("run", spec, "--run-dir", run_dir, "--num-cpus", "2"),
                         "is in use by a live driver", f"pid {first.pid}")
        assert "resume" not in again  # never advised while the other driver is alive
        while not (run_dir / "trial_rows").is_dir() and time.time() < deadline:
            time.sleep(0.2)  # now with a trial running
        with pytest.raises(UserError, match=f"in use by a live driver .*pid {first.pid} "):
            acquire(run_dir, "resume")  # at once: a `resume` takes seconds to import
        assert first.poll() is None, "the study ended before its trials were under way"
        out, _ = first.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, out  # the first driver never noticed the second
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"ok"}
    assert sorted(trials["optuna_trial_number"]) == list(range(4))  # none interrupted or extra
    study = optuna.load_study(study_name="owned", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert not (run_dir / LOCK).exists()  # a finished driver leaves no lock
    assert live_holder(run_dir) is None


def test_a_live_holder_refuses_resume_and_run_in_one_line(tmp_path):
    """The refusal a second driver gets, against a real live process holding the lock."""
    run_dir = finished_run(tmp_path)
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    with holder_process(run_dir) as proc:
        line = one_line(cli("resume", run_dir), f"run directory {run_dir} is in use by a live "
                        f"driver (`lbt-study run`, pid {proc.pid} on host", "last wrote")
        print(line)
        line = one_line(cli("run", spec, "--run-dir", run_dir), "in use by a live driver",
                        f"pid {proc.pid}")
        assert "resume" not in line
        print(line)


def test_a_dead_drivers_lock_is_taken_over(tmp_path):
    with holder_process(tmp_path) as proc:
        dead = proc.pid
        with pytest.raises(UserError, match=f"pid {dead} on host"):
            acquire(tmp_path, "resume")
        proc.kill()
        proc.wait()
        assert read_holder(tmp_path).pid == dead  # the lock file stays behind a killed driver
        assert live_holder(tmp_path) is None  # but nobody holds it
        with acquire(tmp_path, "resume") as lock:
            assert lock.previous.pid == dead  # taken over, and said whose
            assert read_holder(tmp_path).pid == os.getpid()
            with pytest.raises(UserError, match=f"pid {os.getpid()}"):
                acquire(tmp_path, "run")  # the new holder is as exclusive as the first
        assert not (tmp_path / LOCK).exists()


def test_a_recent_holder_on_another_host_is_taken_as_alive(tmp_path):
    """A filesystem whose locks do not cross hosts: the heartbeat decides."""
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "run",
                                             "started": time.time()}))
    with pytest.raises(UserError, match="pid 1 on host elsewhere"):
        acquire(tmp_path, "resume")
    old = time.time() - 3600
    os.utime(tmp_path / LOCK, (old, old))  # silent for an hour: dead
    with acquire(tmp_path, "resume") as lock:
        assert lock.previous.host == "elsewhere"


