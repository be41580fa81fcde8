"""Out-of-memory planning and divergence, on CPU with injected faults."""

import sys
from pathlib import Path

import pytest

from lbt_study.batching import make_batch_plan
from lbt_study.config import TrainConfig
from lbt_study.train import micro_batch_candidates, run_training

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402

RUN = {"model": "mlp", "batch_size": 128, "lr": 0.1, "epochs": 1, "norm": "batch",
       "dtype": "float64", "seed": 3}


def test_candidates_are_divisors_not_above_the_plan():
    plan = make_batch_plan(96, workers=2)  # 48 per worker
    assert micro_batch_candidates(plan, None) == [48, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert micro_batch_candidates(plan, ghost=8) == [48, 24, 16, 8]


def test_oom_at_the_requested_micro_batch_keeps_b_by_accumulation():
    rows, ref_rows = [], []
    out = run_training(TrainConfig(**RUN, fault_oom_above=40), rows.append)
    run_training(TrainConfig(**RUN, accumulation_steps=4), ref_rows.append)
    last = rows[-1]
    assert out.status == "ok"
    assert (last["micro_batch_size"], last["accumulation_steps_used"]) == (32, 4)
    assert last["norm_batch_size"] == 32  # BatchNorm now sees the smaller micro-batch
    assert last["examples_seen"] == out.examples_seen == 12 * 128  # B unchanged
    # exactly the run that asked for accumulation 4 in the first place
    assert last["val_loss"] == pytest.approx(ref_rows[-1]["val_loss"], rel=1e-12)


def test_oom_at_every_size_ends_with_status_oom():
    rows = []
    out = run_training(TrainConfig(**{**RUN, "norm": "ghost_batch", "ghost_batch_size": 64},
                                   fault_oom_above=40), rows.append)
    assert out.status == "oom" and out.steps == 0
    assert rows[-1]["status"] == "oom"
    assert rows[-1]["error"] == "out of memory at every micro-batch for B=128: tried 128, 64"


def test_workers_agree_on_the_micro_batch_when_one_runs_out(tmp_path):
    config = {**RUN, "workers": 2, "norm": "none"}
    per_rank = _ddp.spawn(_ddp.oom_worker, tmp_path, config, [10**6, 40])
    for result in per_rank:
        assert result["status"] == "ok"
        assert result["last"]["micro_batch_size"] == 32  # rank 0 alone would fit 64
        assert result["last"]["accumulation_steps_used"] == 2


def test_a_loss_far_above_the_start_is_divergence_with_its_step():
    rows = []
    out = run_training(TrainConfig(**{**RUN, "norm": "none", "lr": 30.0, "epochs": 2}),
                       rows.append)
    assert out.status == "diverged" and out.diverged_step == rows[-1]["diverged_step"]
    assert "x the first step's" in rows[-1]["error"]
    no_rule = run_training(TrainConfig(**{**RUN, "norm": "none", "lr": 30.0, "epochs": 2},
                                       divergence_factor=None))
    assert no_rule.status in ("ok", "diverged") and no_rule.steps > out.steps
