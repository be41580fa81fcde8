"""A study on a workload defined outside lbt_study, named ``module:attr``, through the real
runner: the user's package is importable by the driver (sys.path) and by every Ray worker
(PYTHONPATH, set before Ray starts: workers inherit the environment, not sys.path)."""

import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from lbt_study import Study, load_results
from lbt_study.errors import UserError
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study
from lbt_study.train.workload import get_workload

PACKAGE = Path(__file__).resolve().parent / "external_workload_pkg" / "my_lab_workloads"
NAME = "my_lab_workloads.blobs:WORKLOAD"


def _forget_package():
    for name in [m for m in sys.modules if m.split(".")[0] == "my_lab_workloads"]:
        del sys.modules[name]


@pytest.fixture
def lab_dir(tmp_path, monkeypatch):
    """The user's package copied to a directory of its own, on sys.path and PYTHONPATH."""
    root = tmp_path / "lab"
    shutil.copytree(PACKAGE, root / "my_lab_workloads")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.syspath_prepend(str(root))
    _forget_package()
    yield root
    _forget_package()


@pytest.fixture
def ray_with_lab(lab_dir, start_local_ray):
    """A 2-CPU local Ray started after PYTHONPATH names the user's package."""
    start_local_ray()
    return lab_dir


def test_the_package_is_not_importable_without_its_path():
    """Negative control: only the fixtures make the workload importable."""
    _forget_package()
    with pytest.raises(UserError, match="cannot import workload module 'my_lab_workloads.blobs'"):
        get_workload(NAME)


def _space(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [32, 64]),
        "workers": trial.suggest_categorical("workers", [1, 2]),
        "lr": trial.suggest_float("lr", 0.02, 0.2, log=True),
    }


@pytest.mark.ray
def test_a_study_runs_on_an_external_workload_with_its_own_metric(tmp_path, ray_with_lab):
    study = Study(
        name="lab", workload=NAME, space=_space, trials=3,
        fixed={"epochs": 2, "eval_every_examples": 512, "norm": "batch", "stratify": True},
        initial_points=[{"batch_size": 32, "workers": 1, "lr": 0.1},
                        {"batch_size": 64, "workers": 1, "lr": 0.05},
                        {"batch_size": 64, "workers": 2, "lr": 0.1}],  # Ray Train workers
    )
    checked = check_study(study)  # the driver imports it too
    assert checked.workload.name == "lab-blobs"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = []
    run_study(study, run_dir, checked.workload.objective_direction,
              max_trial_cpus=checked.max_trial_cpus, progress=lines.append)

    for table in ("trials", "history"):
        assert (run_dir / f"{table}.parquet").is_file() and (run_dir / f"{table}.csv").is_file()
    trials, history = load_results(run_dir)
    finished = [line for line in lines if not line.startswith("... ")]  # not heartbeats
    assert len(trials) == 3 and len(finished) == 3
    assert (trials["status"] == "ok").all(), trials[["status", "error"]].to_dict("records")
    assert (trials["workload"] == NAME).all() and trials["stratify"].all()
    assert sorted(trials["workers"]) == [1, 1, 2]

    for column in ("val_top2_accuracy", "train_top2_accuracy", "val_accuracy"):
        assert column in history.columns
        assert history[column].between(0, 1).all()
    assert (history["val_top2_accuracy"] >= history["val_accuracy"]).all()
    for row in trials.itertuples():
        rows = history[history["trial_id"] == row.trial_id].sort_values("step")
        assert rows["step"].iloc[0] == 0 and rows["step"].iloc[-1] == row.total_steps
        assert set(rows["world_size"]) == {row.workers}
        # the workload's own objective: top-2 accuracy on the validation set
        assert row.final_objective == pytest.approx(rows["val_top2_accuracy"].iloc[-1])
        assert math.isfinite(row.final_objective) and row.final_objective > 0.6
