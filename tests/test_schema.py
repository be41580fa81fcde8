"""The table schema against what trials really report.

Every key a trial reports is a documented history column, a workload metric column, or a
trial-level key deliberately kept out of the history; every documented history column is
filled by some built-in workload (mfu only on a GPU); the history table keeps exactly the
documented and metric columns.
"""

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from lbt_study.records.results import TRIALS_COLUMNS, history_record
from lbt_study.records.schema import HISTORY_COLUMNS, TRIAL_ONLY_KEYS, metric_columns
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.workload import get_workload

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402
import test_workloads_real as real  # noqa: E402

GPU_ONLY = {"mfu"}
"""Needs a device with a known peak FLOP rate: NaN on CPU."""
SET_BY_DRIVER = {"trial_id", "worker_nodes"}
"""Added outside the training loop: by the results writer and by the Ray runner."""

BASE = {"lr": 0.05, "epochs": 0.25, "seed": 0}
CONFIGS = {  # one small run per built-in workload, each with the noise scale measured
    "digits-mlp": {"workload": "digits", "model": "mlp", "norm": "batch", "batch_size": 64,
                   "accumulation_steps": 2, "sharpness_examples": 32, "sharpness_iters": 3},
    "digits-cnn": {"workload": "digits", "model": "cnn", "norm": "hybrid", "batch_size": 64,
                   "accumulation_steps": 2, "swa_start": 0.5},
    "linreg": {"workload": "linreg", "norm": "none", "batch_size": 64, "accumulation_steps": 4},
    "charlm": {"workload": "charlm", "model": "tiny", "norm": "layer", "batch_size": 32,
               "accumulation_steps": 2, "optimizer": "adamw", "lr": 0.003},
    "cifar": {"workload": "cifar", "model": "resnet_tiny", "norm": "batch", "batch_size": 32,
              "accumulation_steps": 2, "epochs": 0.5},
}


def allowed_keys(workload: str) -> set[str]:
    metrics = [m.name for m in get_workload(workload).metrics]
    return set(HISTORY_COLUMNS) | set(metric_columns(metrics)) | TRIAL_ONLY_KEYS


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """{run name: rows} of one run per built-in workload, a 2-worker DDP run, and runs that
    end early (diverged, out of memory)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LBT_CHARLM_CHARS", "20000")
    out = {}
    try:
        for name, values in CONFIGS.items():
            rows: list = []
            run_training(TrainConfig(**{**BASE, **values}), rows.append)
            out[name] = (values["workload"], rows)
        for name, extra in (("diverged", {"lr": 1e4}), ("oom", {"fault_oom_above": 4})):
            rows = []
            run_training(TrainConfig(**{**BASE, **CONFIGS["digits-mlp"], **extra}), rows.append)
            out[name] = ("digits", rows)
        ddp = {**BASE, "workload": "digits", "model": "mlp", "norm": "sync_batch",
               "batch_size": 64, "workers": 2}
        per_rank = _ddp.spawn(_ddp.train_worker, tmp_path_factory.mktemp("ddp"), [ddp])
        assert "error" not in per_rank[0][0], per_rank[0][0]
        out["ddp"] = ("digits", per_rank[0][0]["rows"])
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module", autouse=True)
def _cifar_files(tmp_path_factory):
    """CIFAR-format files for the cifar run (written as test_workloads_real writes them)."""
    d = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    d.mkdir()
    for i in range(1, 6):
        real.write_cifar_batch(d / f"data_batch_{i}", i, f"training batch {i} of 5")
    real.write_cifar_batch(d / "test_batch", 6, "testing batch 1 of 1")
    mp = pytest.MonkeyPatch()
    mp.setenv("LBT_CIFAR10_DIR", str(d))
    mp.delenv("LBT_CIFAR10_LIMIT", raising=False)
    yield
    mp.undo()


def test_every_reported_key_is_documented_or_deliberately_dropped(reports):
    for name, (workload, rows) in reports.items():
        assert rows, name
        for row in rows:
            unknown = set(row) - allowed_keys(workload)
            assert not unknown, f"{name} reported undocumented keys {sorted(unknown)}"


def test_history_rows_keep_exactly_the_documented_and_metric_columns(reports):
    for name, (workload, rows) in reports.items():
        metrics = set(metric_columns([m.name for m in get_workload(workload).metrics]))
        for row in rows:
            rec = history_record("t", {**row, "training_iteration": 3, "time_total_s": 1.0})
            if rec is None:
                assert "val_loss" not in row and row["status"] in ("diverged", "oom"), name
                continue
            expected = {"trial_id"} | (set(row) & (set(HISTORY_COLUMNS) | metrics))
            assert set(rec) == expected, name
            assert not set(rec) & TRIAL_ONLY_KEYS


def test_every_documented_history_column_is_filled_by_some_builtin_workload(reports):
    filled = set(SET_BY_DRIVER)
    for _, rows in reports.values():
        for row in rows:
            filled |= {k for k, v in row.items() if v is not None and not (
                isinstance(v, float) and math.isnan(v))}
    missing = set(HISTORY_COLUMNS) - filled - GPU_ONLY
    assert not missing, f"documented but never filled: {sorted(missing)}"
    # on CPU the GPU-only columns are reported, as NaN (there is no peak to divide by)
    cpu_rows = [r for _, rows in reports.values() for r in rows if "mfu" in r]
    assert cpu_rows and all(math.isnan(r["mfu"]) for r in cpu_rows)


def test_batch_growth_reaches_the_history_table(reports):
    growth = {**BASE, **CONFIGS["digits-mlp"], "batch_growth": "0.5:2", "epochs": 1.0}
    rows: list = []
    run_training(TrainConfig(**growth), rows.append)
    history = pd.DataFrame([history_record("t", r) for r in rows])
    assert sorted(history["batch_size_current"].unique()) == [64, 128]
    assert "train_examples" not in history.columns


def test_trial_only_keys_have_a_trials_table_column_or_are_inputs_to_one():
    inputs = {"config_as_run", "mfu_run", "step_time_median_run", "step_time_p90_run"}
    assert TRIAL_ONLY_KEYS - set(TRIALS_COLUMNS) == inputs
