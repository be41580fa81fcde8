"""Linear regression with a known gradient noise scale and Hessian: a calibration workload.

x ~ N(0, I_d), y = x . w* + sigma * eps, loss 0.5 * mean((x . w - y)^2), w starting at 0.
At w (delta = w - w*) the per-example gradient is g = x (x . delta - sigma * eps), so

    G       = delta                        |G|^2  = |delta|^2
    tr(S)   = (d + 1) |delta|^2 + d sigma^2   (S: per-example gradient covariance)
    B_simple = tr(S) / |G|^2
    Hessian = E[x x^T] = I_d  (on a sample X: X^T X / n)

With a vanishing learning rate w stays at 0 and a measured noise scale can be checked
against ``closed_form_noise_scale()``. The model takes no normalization (``norm='none'``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lbt_study.errors import UserError
from lbt_study.train.norms import NormSpec
from lbt_study.train.workload import Data, Workload

DIM, SIGMA, N_TRAIN, N_VAL = 8, 1.0, 65536, 8192
W_STAR_SQ = 0.04
"""|w*|^2, chosen so that B_simple (about 209) lies between typical test batch sizes."""


def w_star() -> Tensor:
    return torch.full((DIM,), math.sqrt(W_STAR_SQ / DIM))


def closed_form_noise_scale(delta_sq: float = W_STAR_SQ) -> dict[str, float]:
    """|G|^2, tr(S) and B_simple at a point with |w - w*|^2 = delta_sq (population values)."""
    trace = (DIM + 1) * delta_sq + DIM * SIGMA**2
    return {"grad_sq": delta_sq, "trace_sigma": trace, "b_simple": trace / delta_sq}


def load_data(seed: int) -> Data:
    del seed  # fixed data
    gen = torch.Generator().manual_seed(2018)
    x = torch.randn(N_TRAIN + N_VAL, DIM, generator=gen)
    y = x @ w_star() + SIGMA * torch.randn(N_TRAIN + N_VAL, generator=gen)
    return Data(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def linear(norm: NormSpec) -> nn.Module:
    if norm.kind != "none":
        raise UserError(f"the linreg workload's model takes no normalization, got {norm.kind!r}")
    model = nn.Linear(DIM, 1, bias=False)
    nn.init.zeros_(model.weight)
    return nn.Sequential(model, nn.Flatten(0))


def half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return 0.5 * ((outputs - targets) ** 2).mean()


WORKLOAD = Workload(
    name="linreg",
    models={"linear": linear},
    load_data=load_data,
    loss=half_mse,
    metrics=(),
    objective="loss",
    description="linear regression, d=8, sigma=1; known noise scale and Hessian",
)
