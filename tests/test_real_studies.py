"""Tiny studies through the real runner on the CIFAR-format and char-LM workloads (CPU)."""

import sys
from pathlib import Path

import pytest

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study

sys.path.insert(0, str(Path(__file__).parent))
from test_workloads_real import cifar_dir  # noqa: E402, F401  (the fixture)

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_with_data(cifar_dir, monkeypatch, start_local_ray):  # noqa: F811
    """A 2-CPU local Ray started after the data settings are in the environment, so that
    its worker processes inherit them."""
    monkeypatch.setenv("LBT_CHARLM_CHARS", "40000")
    start_local_ray()


def _lr(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 0.1, log=True)}


@pytest.mark.parametrize("workload,fixed", [
    ("cifar", {"model": "resnet_tiny", "norm": "batch", "batch_size": 32, "epochs": 1,
               "eval_every_examples": 160}),
    ("charlm", {"model": "tiny", "norm": "layer", "batch_size": 32, "epochs": 0.5,
                "optimizer": "adamw", "eval_every_examples": 160}),
])
def test_a_tiny_study_runs_end_to_end(tmp_path, ray_with_data, workload, fixed):
    study = Study(name=workload, workload=workload, space=_lr, trials=2, fixed=fixed)
    checked = check_study(study)
    run_study(study, tmp_path, checked.workload.objective_direction,
              max_trial_cpus=checked.max_trial_cpus, progress=lambda line: None)
    trials, history = load_results(tmp_path)
    assert list(trials["status"]) == ["ok", "ok"], trials["error"].tolist()
    assert history.groupby("trial_id").size().min() >= 3
    if workload == "charlm":  # validation loss (the objective) falls from its start
        first, last = history.groupby("trial_id")["objective"].agg(["first", "last"]).T.values
        assert (last < first).all()
    else:
        assert history["val_accuracy"].between(0, 1).all()
