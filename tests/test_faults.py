"""Out-of-memory planning and divergence, on CPU with injected faults."""

import math
import sys
from pathlib import Path

import pytest
import torch

from lbt_study.train import micro_batch_candidates, run_training
from lbt_study.train.batching import make_batch_plan
from lbt_study.train.config import TrainConfig

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


# ---------------------------------------------------------------- found on the H200 run

def test_out_of_memory_is_told_from_other_errors():
    from lbt_study.train.measure import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] "
                                         "DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocation errors


def test_a_model_too_large_to_place_ends_oom_not_failed():
    """A real allocation failure (40 TB of parameters on the CPU) outside the memory probe:
    the runner's failed-row builder says oom, with torch's message."""
    from lbt_study.study.trial import _failed_row

    with pytest.raises(RuntimeError) as caught:
        torch.empty(10**13, dtype=torch.float32)
    row = _failed_row(caught.value, None, None)
    assert row["status"] == "oom" and "can't allocate memory" in row["error"]
    assert _failed_row(RuntimeError("shapes"), None, None)["status"] == "failed"


def test_a_trial_that_fits_no_micro_batch_counts_no_flops():
    """On the H200 a ResNet-18 trial at B=131,072 ran out of memory in the FLOP count after
    the probe: a trial that fits nothing does no forward at all, and one that fits counts
    FLOPs on a small batch, the same per example as on its whole micro-batch."""
    rows = []
    run_training(TrainConfig(**RUN, fault_oom_above=0), rows.append)
    assert rows[-1]["status"] == "oom" and math.isnan(rows[-1]["flops_per_example"])
    small, whole = [], []
    run_training(TrainConfig(**{**RUN, "epochs": 0.1}), small.append)
    from lbt_study.train.measure import flops_per_example
    from lbt_study.train.setup import assemble

    parts = assemble(TrainConfig(**{**RUN, "epochs": 0.1}), torch.device("cpu"))
    xb, yb = parts.batch(torch.arange(128))
    whole = flops_per_example(parts.model, parts.loss, xb, yb)
    assert small[-1]["flops_per_example"] == pytest.approx(whole, rel=1e-12)


def test_the_probe_counts_the_augmentation_and_keeps_headroom():
    """The probe runs what a training micro-batch runs, augmentation included: an
    augmentation that cannot take more than 32 examples makes the probe choose 32."""
    from lbt_study.train.setup import within_headroom

    parts_cfg = TrainConfig(workload="_augment_oom:WORKLOAD", model="mlp",
                            batch_size=128, lr=0.1, epochs=1, norm="none",
                            fault_oom_above=10**9)  # probe on CPU, no injected fault
    rows = []
    out = run_training(parts_cfg, rows.append)
    assert out.status == "ok"
    assert (rows[-1]["micro_batch_size"], rows[-1]["accumulation_steps_used"]) == (32, 4)
    assert within_headroom(90, 100) and not within_headroom(91, 100)
