"""Measurements against independent computations: noise scale, sharpness, FLOPs, norms."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lbt_study.errors import UserError
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.measure import flops_per_example
from lbt_study.train.measurements.noise_scale import gns_estimates
from lbt_study.train.measurements.sharpness import top_hessian_eigenvalue
from lbt_study.train.norms import HybridNorm, NormSpec, make_norm
from lbt_study.train.workloads import linreg

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402

GNS_RUN = {"workload": "linreg", "norm": "none", "batch_size": 256, "lr": 1e-12,
           "epochs": 24, "gns_ema": 0.999, "eval_every_examples": 10**9,
           "measure_flops": False}


def empirical_noise_scale():
    """|G|^2 and tr(S) of the per-example gradients on the training set at w = 0 (numpy)."""
    data = linreg.load_data(0)
    x, y = data.x_train.double().numpy(), data.y_train.double().numpy()
    g = x * (x @ np.zeros(linreg.DIM) - y)[:, None]  # per-example gradients at w = 0
    grad = g.mean(axis=0)
    return grad @ grad, ((g - grad) ** 2).sum(axis=1).mean()


def test_estimators_invert_the_expectations():
    # E|G_b|^2 = |G|^2 + tr(S)/b: plug exact expectations in, get exact values out
    grad_sq, trace = 0.3, 12.0
    small, big = grad_sq + trace / 16, grad_sq + trace / 128
    assert gns_estimates(small, big, 16, 128) == pytest.approx((grad_sq, trace))


def test_noise_scale_one_worker_with_accumulation_matches_closed_form():
    rows = []
    run_training(TrainConfig(**GNS_RUN, accumulation_steps=4), rows.append)
    last, truth = rows[-1], linreg.closed_form_noise_scale()
    assert last["gns_small_batch"] == 64  # micro-batch; the large batch is B = 256
    assert last["gns_simple"] == pytest.approx(truth["b_simple"], rel=0.10)
    grad_sq, trace = empirical_noise_scale()
    assert last["gns_trace_sigma"] == pytest.approx(trace, rel=0.05)
    assert last["gns_grad_sq"] == pytest.approx(grad_sq, rel=0.10)


def test_noise_scale_two_ddp_workers_matches_closed_form(tmp_path):
    per_rank = _ddp.spawn(_ddp.gns_worker, tmp_path, {**GNS_RUN, "workers": 2})
    truth = linreg.closed_form_noise_scale()
    for last in per_rank:
        assert last["world_size"] == 2
        assert last["gns_small_batch"] == 128  # each worker's local batch
        assert last["gns_simple"] == pytest.approx(truth["b_simple"], rel=0.10)
    assert per_rank[0]["gns_simple"] == per_rank[1]["gns_simple"]  # averaged over workers


def test_noise_scale_is_nan_for_one_worker_without_accumulation():
    rows = []
    run_training(TrainConfig(**{**GNS_RUN, "epochs": 1}), rows.append)
    assert math.isnan(rows[-1]["gns_simple"]) and math.isnan(rows[-1]["gns_trace_sigma"])


def test_sharpness_of_a_quadratic_is_its_top_eigenvalue():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 6, generator=gen, dtype=torch.float64) * torch.tensor(
        [3.0, 2.0, 1.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    y = torch.randn(512, generator=gen, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(6, 1, bias=False), nn.Flatten(0)).double()
    got = top_hessian_eigenvalue(model, linreg.half_mse, x, y, iters=200)
    expected = np.linalg.eigvalsh((x.T @ x / len(x)).numpy()).max()  # Hessian of 0.5*mse
    assert got == pytest.approx(expected, rel=0.01)


def test_sharpness_of_a_small_network_matches_its_full_hessian():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    y = torch.randint(2, (64,))
    loss = nn.functional.cross_entropy
    got = top_hessian_eigenvalue(model, loss, x, y, iters=500, tol=1e-10)
    params = dict(model.named_parameters())

    def f(flat):
        parts, i = {}, 0
        for name, p in params.items():
            parts[name] = flat[i:i + p.numel()].view_as(p)
            i += p.numel()
        return loss(torch.func.functional_call(model, parts, (x,)), y)

    flat = torch.cat([p.detach().flatten() for p in params.values()])
    eig = np.linalg.eigvalsh(torch.autograd.functional.hessian(f, flat).numpy())
    assert abs(got) == pytest.approx(np.abs(eig).max(), rel=0.01)


def test_flops_per_example_of_a_linear_layer_by_hand():
    model = nn.Sequential(nn.Linear(8, 1, bias=False), nn.Flatten(0))
    x, y = torch.randn(32, 8), torch.randn(32)
    # forward x @ W^T: 2*8 per example; backward dL/dW: 2*8 (no input gradient needed)
    assert flops_per_example(model, linreg.half_mse, x, y) == 4 * 8
    assert model[0].weight.grad is None  # restored


def test_throughput_fields_are_measured():
    rows = []
    run_training(TrainConfig(model="mlp", batch_size=64, lr=0.1, epochs=1, norm="batch"),
                 rows.append)
    last = rows[-1]
    assert 0 < last["step_time_median"] <= last["step_time_p90"]
    assert last["step_time_median_run"] <= last["step_time_p90_run"]
    assert last["throughput"] == pytest.approx(64 / last["step_time_median"], rel=0.5)
    assert last["peak_memory_bytes"] > 50 * 2**20
    assert last["flops_per_example"] > 0 and math.isnan(last["mfu"])  # no peak on CPU


def test_hybrid_norm_extremes_are_batch_and_layer_norm():
    x = torch.randn(16, 4, 3, 3, dtype=torch.float64)
    hybrid = HybridNorm(4).double()
    with torch.no_grad():
        hybrid.theta.fill_(40.0)
    bn = nn.BatchNorm2d(4).double()
    torch.testing.assert_close(hybrid(x), bn(x), atol=1e-6, rtol=0)
    with torch.no_grad():
        hybrid.theta.fill_(-40.0)
    ln = nn.GroupNorm(1, 4).double()
    torch.testing.assert_close(hybrid(x), ln(x), atol=1e-6, rtol=0)
    assert hybrid.alpha == pytest.approx(0.0, abs=1e-12)


def test_hybrid_alpha_is_learnt_and_recorded():
    assert isinstance(make_norm(NormSpec("hybrid"), 8, spatial=True), HybridNorm)
    rows = []
    run_training(TrainConfig(batch_size=64, lr=0.1, epochs=2, norm="hybrid"), rows.append)
    assert 0 < rows[-1]["hybrid_alpha"] < 1 and rows[-1]["hybrid_alpha"] != 0.5


def test_label_smoothing_needs_cross_entropy():
    with pytest.raises(UserError, match="label_smoothing needs a cross-entropy loss"):
        run_training(TrainConfig(workload="linreg", norm="none", batch_size=64, lr=0.1,
                                 epochs=0.01, label_smoothing=0.1))


def test_swa_final_evaluation_is_of_the_average():
    base = {"workload": "linreg", "norm": "none", "batch_size": 256, "lr": 0.05,
            "epochs": 0.5, "schedule": "constant", "measure_flops": False}
    plain, last_only, half = [], [], []
    run_training(TrainConfig(**base), plain.append)
    total = plain[-1]["total_steps"]
    run_training(TrainConfig(**base, swa_start=(total - 0.5) / total), last_only.append)
    run_training(TrainConfig(**base, swa_start=0.5), half.append)
    assert last_only[-1]["swa"] and half[-1]["swa"]
    # averaging only the last iterate is the last iterate; averaging half the run is not
    assert last_only[-1]["val_loss"] == pytest.approx(plain[-1]["val_loss"], rel=1e-9)
    assert half[-1]["val_loss"] != pytest.approx(plain[-1]["val_loss"], rel=1e-6)
