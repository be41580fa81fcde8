"""grad_norm_ratio on 2 gloo DDP workers equals max/min of the two workers' gradient norms,
computed here with plain autograd on each worker's half of the first global batch; NaN on
one worker and before the first step."""

import math
import sys
from pathlib import Path

import pytest
import torch

from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.setup import build_model
from lbt_study.train.workload import get_workload

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402

RUN = {"workload": "digits", "model": "mlp", "norm": "none", "dtype": "float64", "seed": 3,
       "batch_size": 64, "lr": 0.05, "epochs": 3 * 64 / 1437, "gns_probe_examples": 0,
       "measure_flops": False, "eval_first_step": 1}


def first_step_ratio():
    """max/min over the two halves of step 1's batch of |grad of the half's mean loss|, at
    the seeded initial weights (the first global batch: the seed's first permutation)."""
    cfg = TrainConfig(**RUN)
    workload = get_workload("digits")
    data = workload.load_data(cfg.seed)
    x, y = data.x_train.double(), data.y_train
    batch = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))[:64]
    model = build_model(cfg, workload, torch.device("cpu"))
    norms = []
    for half in batch.chunk(2):
        model.zero_grad()
        workload.loss(model(x[half]), y[half]).backward()
        norms.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item())
    return max(norms) / min(norms)


def test_two_workers_ratio_is_the_ratio_of_their_local_gradient_norms(tmp_path):
    configs = [{**RUN, "workers": 2}, {**RUN, "workers": 2, "accumulation_steps": 2}]
    per_rank = _ddp.spawn(_ddp.train_worker, tmp_path, configs)
    want = first_step_ratio()
    print(f"step 1: max/min of the two workers' gradient norms {want:.12f}")
    assert want > 1.0001  # the two halves differ: a case that could fail
    for i in range(len(configs)):  # the accumulated local gradient under accumulation too
        rows = [per_rank[r][i]["rows"] for r in (0, 1)]
        assert [r["step"] for r in rows[0]] == [0, 1, 2, 3]
        assert math.isnan(rows[0][0]["grad_norm_ratio"])  # no step yet
        assert rows[0][1]["grad_norm_ratio"] == pytest.approx(want, rel=1e-9)
        assert [r["grad_norm_ratio"] for r in rows[0]][1:] == \
            [r["grad_norm_ratio"] for r in rows[1]][1:]  # the same on both workers
        assert all(r["grad_norm_ratio"] >= 1 for r in rows[0][1:])


def test_one_worker_has_no_ratio():
    rows = []
    run_training(TrainConfig(**RUN), rows.append)
    assert all(math.isnan(r["grad_norm_ratio"]) for r in rows)
