"""Data-parallel training on real processes (gloo, 'spawn') against single-process runs.

One optimizer step must see exactly B examples however they are laid out: 2 workers x B/2,
accumulation of micro-batches, or one process with the whole batch. float64 makes the
comparison tight (1e-6 on every parameter after a few SGD-with-momentum steps).
"""

import functools
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements import seconds_columns

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # spawn's children import the worker module by name
    sys.path.insert(0, _HERE)
import _ddp  # noqa: E402

B = 32
"""Global batch size; 8 steps at 0.17 epochs of the 1,437 digits training images."""
BASE = {
    "workload": "digits",
    "model": "mlp",
    "norm": "none",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "dtype": "float64",
    "seed": 7,
    "epochs": 0.17,
    "batch_size": B,
    "eval_schedule": "uniform",  # every step an evaluation: the rows compared across ranks
    "eval_every_examples": B,
}
TWO_WORKER_CONFIGS = {
    "none": {"workers": 2},
    "layer": {"workers": 2, "norm": "layer"},
    "accumulation": {"workers": 2, "accumulation_steps": 2},
    "sync_batch": {"workers": 2, "norm": "sync_batch"},
}
TIMING_KEYS = {  # measured per worker with its own clock and memory: not expected equal
    "throughput", "train_seconds", "eval_seconds", "step_time_median", "step_time_p90",
    "step_time_median_run", "step_time_p90_run", "peak_memory_bytes", "mfu", "mfu_run",
}


@functools.cache
def single(**overrides):
    """A one-process run (cached; do not mutate): its final state_dict and reported rows."""
    rows = []
    outcome = run_training(TrainConfig(**{**BASE, **overrides}), rows.append)
    return {k: v.detach().clone() for k, v in outcome.model.state_dict().items()}, rows


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Every 2-worker run of TWO_WORKER_CONFIGS, from one spawn: {name: [rank0, rank1]}."""
    names = list(TWO_WORKER_CONFIGS)
    configs = [{**BASE, **TWO_WORKER_CONFIGS[name]} for name in names]
    per_rank = _ddp.spawn(_ddp.train_worker, tmp_path_factory.mktemp("ddp"), configs)
    return {name: [per_rank[r][i] for r in range(_ddp.WORLD_SIZE)] for i, name in enumerate(names)}


def ranks(two_workers, name):
    """The per-rank results of one 2-worker configuration; fails if that run raised."""
    results = two_workers[name]
    for result in results:
        assert "error" not in result, f"2-worker run {name!r} raised {result['error']}"
    return results


def test_batch_size_changes_the_result():
    """Negative control: the comparisons below would notice a different batch."""
    whole, rows_whole = single()
    half, rows_half = single(batch_size=B // 2)
    assert rows_whole[-1]["total_steps"] == 8 and rows_half[-1]["total_steps"] == 16
    assert max_diff(whole, half) > 1e-3


def test_accumulation_equals_whole_batch():
    whole, _ = single()
    accumulated, rows = single(accumulation_steps=4)
    assert rows[-1]["status"] == "ok" and rows[-1]["total_steps"] == 8
    assert rows[-1]["examples_seen"] == 8 * B
    assert max_diff(accumulated, whole) < 1e-6


@pytest.mark.parametrize("name", ["none", "layer", "accumulation"])
def test_two_workers_equal_one_worker(two_workers, name):
    norm = TWO_WORKER_CONFIGS[name].get("norm", "none")
    whole, _ = single(norm=norm)
    for result in ranks(two_workers, name):
        assert result["status"] == "ok" and result["steps"] == 8
        assert max_diff(result["state"], whole) < 1e-6


def test_sync_batch_two_workers_equal_batch_norm_on_one_worker(two_workers):
    """Statistics pooled over 2 x B/2 examples equal BatchNorm over B (running stats too)."""
    whole, _ = single(norm="sync_batch")
    assert any(k.endswith("running_var") for k in whole)
    for result in ranks(two_workers, "sync_batch"):
        assert max_diff(result["state"], whole) < 1e-6
    # ... whereas BatchNorm over each worker's half alone gives other weights.
    half, _ = single(norm="batch", batch_size=B // 2, epochs=BASE["epochs"] / 2)
    assert max_diff(ranks(two_workers, "sync_batch")[0]["state"], half) > 1e-3


def _same(a, b):
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("name", list(TWO_WORKER_CONFIGS))
def test_two_worker_rows_agree_across_ranks(two_workers, name):
    rows0, rows1 = (result["rows"] for result in ranks(two_workers, name))
    # 8 steps on the geometric schedule: every step is an evaluation
    assert [r["step"] for r in rows0] == [r["step"] for r in rows1] == list(range(9))
    for row0, row1 in zip(rows0, rows1, strict=True):
        assert row0["world_size"] == row1["world_size"] == 2
        assert abs(row0["replica_spread"]) < 1e-9 and abs(row1["replica_spread"]) < 1e-9
        assert row0["val_loss"] == row1["val_loss"]
        assert row0["val_accuracy"] == row1["val_accuracy"]
        assert row0.keys() == row1.keys()
        timing = TIMING_KEYS | set(seconds_columns())  # each measurement's own seconds
        for key in row0.keys() - timing:
            assert _same(row0[key], row1[key]), key


@pytest.mark.parametrize("name", ["none", "accumulation"])
def test_two_worker_rows_equal_one_worker_rows(two_workers, name):
    _, rows = single()
    for row, ref in zip(ranks(two_workers, name)[0]["rows"], rows, strict=True):
        assert row["examples_seen"] == ref["examples_seen"]
        for key in ("val_loss", "val_accuracy", "train_loss", "train_accuracy"):
            assert row[key] == pytest.approx(ref[key], abs=1e-9), key
    last = ranks(two_workers, name)[0]["rows"][-1]
    assert last["status"] == "ok" and last["minibatch_loss"] == pytest.approx(
        rows[-1]["minibatch_loss"], abs=1e-9
    )


def test_sync_batch_norm_on_two_ranks_is_batch_norm_on_the_whole_batch(tmp_path):
    gen = torch.Generator().manual_seed(3)
    cases = []
    for shape in [(12, 5), (8, 3, 4, 4)]:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64) * 2.0 + 0.5
        w = torch.randn(*shape, generator=gen, dtype=torch.float64)
        cases.append((x, w))
    per_rank = _ddp.spawn(_ddp.sync_batch_norm_worker, tmp_path, cases)

    for i, (x, w) in enumerate(cases):
        ref = nn.BatchNorm1d(x.shape[1]) if x.dim() == 2 else nn.BatchNorm2d(x.shape[1])
        ref = ref.to(torch.float64)
        with torch.no_grad():
            ref.weight.copy_(_ddp.make_sync_batch_norm(x.shape[1]).weight)
            ref.bias.copy_(_ddp.make_sync_batch_norm(x.shape[1]).bias)
        expected = _ddp.sync_batch_norm_pass(ref, x, w)
        ranks = [per_rank[r][i] for r in range(_ddp.WORLD_SIZE)]
        tol = {"atol": 1e-6, "rtol": 1e-6}
        torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), expected["y"], **tol)
        torch.testing.assert_close(
            torch.cat([r["x_grad"] for r in ranks]), expected["x_grad"], **tol
        )
        # Each rank holds its own share of the parameter gradient; DDP would sum them.
        for key in ("weight_grad", "bias_grad"):
            torch.testing.assert_close(sum(r[key] for r in ranks), expected[key], **tol)
        for r in ranks:
            torch.testing.assert_close(r["running_mean"], expected["running_mean"], **tol)
            torch.testing.assert_close(r["running_var"], expected["running_var"], **tol)
        # Sanity: BatchNorm over one rank's half alone gives another output.
        alone = nn.functional.batch_norm(
            x.chunk(2)[0], None, None, ref.weight, ref.bias, training=True
        )
        assert (alone - ranks[0]["y"]).abs().max() > 1e-3
