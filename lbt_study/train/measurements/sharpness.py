"""Sharpness at the end of training (column ``sharpness``): the top Hessian eigenvalue of
the training loss on a fixed training batch (Keskar et al. 2017), when
``sharpness_examples`` > 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts


class Sharpness(Measurement):
    """The top Hessian eigenvalue of the final model, on the first ``sharpness_examples``
    of the fixed train-evaluation subset, by ``sharpness_iters`` power iterations at most."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    @classmethod
    def build(cls, parts: Parts) -> Sharpness | None:
        return cls(parts) if parts.cfg.sharpness_examples else None

    def final(self, model: nn.Module) -> Row:
        p = self.parts
        xb, yb = p.batch(p.train_eval_idx[: p.cfg.sharpness_examples])
        return {"sharpness": top_hessian_eigenvalue(model, p.workload.loss, xb, yb,
                                                    iters=p.cfg.sharpness_iters)}


def top_hessian_eigenvalue(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
    iters: int = 100, tol: float = 1e-5, seed: int = 0,
) -> float:
    """Largest-magnitude eigenvalue of the Hessian of ``loss_fn(model(x), y)`` with respect to
    the trainable parameters, by power iteration on Hessian-vector products (double
    backward). Near a minimum this is the top eigenvalue, the sharpness of Keskar et al. 2017.
    The model is evaluated in eval mode (no normalization statistics change)."""
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
        eig = 0.0
        for _ in range(iters):
            norm = torch.sqrt(sum((t * t).sum() for t in v))
            v = [t / norm for t in v]
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            new = float(sum((a * b).sum() for a, b in zip(hv, v, strict=True)))
            v = [t.detach() for t in hv]
            if abs(new - eig) <= tol * max(abs(new), 1e-12):
                return new
            eig = new
        return eig
    finally:
        model.train(was_training)
