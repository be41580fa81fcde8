"""Layer-wise adaptive optimizers for large-batch training: LARS and LAMB.

Small implementations of the published update rules as ``torch.optim.Optimizer`` subclasses
(no extra dependency fits the project's rules). Both take one "layer" to be one parameter
tensor, use the Euclidean (Frobenius) norm of the whole tensor, and support param groups,
``state_dict``/``load_state_dict`` and an optional closure in ``step``.

``exclude_1d`` (default ``True``): parameters with ``ndim <= 1`` (biases, norm scales and
shifts) get no layer-wise adaptation (trust ratio 1) and no weight decay, as in the reference
implementations of Goyal et al. 2017 and You et al.; LARS then reduces to plain momentum SGD
and LAMB to Adam for those tensors.

Parameters whose ``grad`` is ``None`` are skipped; sparse gradients are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer, lr_scheduler

from lbt_study.errors import unknown_name
from lbt_study.train.names import OPTIMIZERS as OPTIMIZER_NAMES
from lbt_study.train.names import SCHEDULES as SCHEDULE_NAMES
from lbt_study.train.names import registered

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


def _check_positive(name: str, value: float) -> None:
    if not value > 0.0:  # also refuses NaN
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _trust_ratio(
    numerator: Tensor, denominator: Tensor, w_norm: Tensor, other_norm: Tensor
) -> Tensor:
    """``numerator / denominator``, or 1 where ``||w|| == 0`` or the other norm is 0."""
    usable = (w_norm > 0) & (other_norm > 0)
    return torch.where(usable, numerator / denominator, torch.ones_like(numerator))


def _grad(p: Tensor, name: str) -> Tensor:
    if p.grad.is_sparse:
        raise RuntimeError(f"{name} does not support sparse gradients")
    return p.grad


class _CheckedOptimizer(Optimizer):
    """What LARS and LAMB share: options checked for every group, and the closure."""

    @staticmethod
    def _validate(options: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking the options it sets (the rest come from the defaults)."""
        self._validate({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @staticmethod
    def _closure_loss(closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class LARS(_CheckedOptimizer):
    """LARS: You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks", Alg. 1.

    For each parameter tensor ``w`` with gradient ``g`` (momentum buffer ``v`` starts at 0)::

        local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)
                   (local_lr = 1 if ||w|| == 0 or ||g|| == 0)
        v <- momentum * v + lr * local_lr * (g + weight_decay * w)
        w <- w - v

    With ``exclude_1d`` a tensor with ``ndim <= 1`` uses ``local_lr = 1`` and no weight decay,
    i.e. ``v <- momentum * v + lr * g`` (plain momentum SGD). As in the paper, ``lr`` is inside
    the buffer, so a changed ``lr`` (a schedule) only scales new contributions to ``v``.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-9,
        exclude_1d: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            exclude_1d=exclude_1d,
        )
        self._validate(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _validate(options: dict[str, Any]) -> None:
        _check_positive("lr", options["lr"])
        _check_unit_interval("momentum", options["momentum"])
        _check_non_negative("weight_decay", options["weight_decay"])
        _check_positive("trust_coefficient", options["trust_coefficient"])
        _check_non_negative("eps", options["eps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one LARS update to every parameter with a gradient; return the closure's loss."""
        loss = self._closure_loss(closure)

        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = _grad(w, "LARS")
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                v = state["momentum_buffer"]

                if group["exclude_1d"] and w.ndim <= 1:
                    update = g
                    local_lr: Tensor | float = 1.0
                else:
                    wd = group["weight_decay"]
                    w_norm = torch.linalg.vector_norm(w)
                    g_norm = torch.linalg.vector_norm(g)
                    local_lr = _trust_ratio(
                        group["trust_coefficient"] * w_norm,
                        g_norm + wd * w_norm + group["eps"],
                        w_norm,
                        g_norm,
                    )
                    update = g.add(w, alpha=wd) if wd != 0 else g

                v.mul_(momentum).add_(update * (lr * local_lr))
                w.sub_(v)
        return loss


class LAMB(_CheckedOptimizer):
    """LAMB: You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes", Algorithm 2 (with bias correction, phi = identity).

    For each parameter tensor ``w`` with gradient ``g`` at step ``t`` (``m``, ``v`` start at 0)::

        m <- b1 * m + (1 - b1) * g          v <- b2 * v + (1 - b2) * g^2
        m_hat = m / (1 - b1^t)              v_hat = v / (1 - b2^t)
        r = m_hat / (sqrt(v_hat) + eps)     u = r + weight_decay * w
        trust = ||w|| / ||u||               (trust = 1 if ||w|| == 0 or ||u|| == 0)
        w <- w - lr * trust * u

    With ``exclude_1d`` a tensor with ``ndim <= 1`` uses ``trust = 1`` and no weight decay,
    i.e. the Adam update ``w <- w - lr * r``.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        exclude_1d: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, exclude_1d=exclude_1d
        )
        self._validate(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _validate(options: dict[str, Any]) -> None:
        _check_positive("lr", options["lr"])
        betas = options["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_unit_interval("betas[0]", betas[0])
        _check_unit_interval("betas[1]", betas[1])
        _check_non_negative("eps", options["eps"])
        _check_non_negative("weight_decay", options["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one LAMB update to every parameter with a gradient; return the closure's loss."""
        loss = self._closure_loss(closure)

        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = _grad(w, "LAMB")
                state = self.state[w]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(w)
                    state["exp_avg_sq"] = torch.zeros_like(w)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]

                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                u = m_hat / (v_hat.sqrt() + eps)

                if group["exclude_1d"] and w.ndim <= 1:
                    trust: Tensor | float = 1.0
                else:
                    if wd != 0:
                        u.add_(w, alpha=wd)
                    w_norm = torch.linalg.vector_norm(w)
                    u_norm = torch.linalg.vector_norm(u)
                    trust = _trust_ratio(w_norm, u_norm, w_norm, u_norm)

                w.sub_(u * (lr * trust))
        return loss


__all__ = ["LAMB", "LARS"]


# ---------------------------------------------------------------- registries

OptimizerFactory = Callable[..., Optimizer]
"""(params, lr=, momentum=, weight_decay=, trust_coefficient=) -> optimizer; each factory
takes the hyperparameters it uses and ignores the rest."""

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda params, lr, momentum, weight_decay, **_: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay),
    "adamw": lambda params, lr, weight_decay, betas=(0.9, 0.999), **_: torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, betas=betas),
    "lars": lambda params, lr, momentum, weight_decay, trust_coefficient, **_: LARS(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay,
        trust_coefficient=trust_coefficient),
    "lamb": lambda params, lr, weight_decay, betas=(0.9, 0.999), **_: LAMB(
        params, lr=lr, weight_decay=weight_decay, betas=betas),
}
"""The optimizer registry: name -> factory."""
registered("optimizer", OPTIMIZERS, OPTIMIZER_NAMES)


def make_optimizer(name: str, params: Params, **hyper: float) -> Optimizer:
    """The optimizer ``name`` from the registry; an unknown name lists the known ones."""
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, tuple(OPTIMIZERS))
    return OPTIMIZERS[name](params, **hyper)


ScheduleFactory = Callable[[Optimizer, int], lr_scheduler.LRScheduler]
"""(optimizer, steps after warmup) -> the schedule that follows the warmup."""

SCHEDULES: dict[str, ScheduleFactory] = {
    "cosine": lambda opt, steps: lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
    "constant": lambda opt, steps: lr_scheduler.LambdaLR(opt, lambda _: 1.0),
}
"""The learning-rate schedule registry: name -> factory."""
registered("schedule", SCHEDULES, SCHEDULE_NAMES)


def make_scheduler(opt: Optimizer, total_steps: int, warmup_steps: int,
                   kind: str) -> lr_scheduler.LRScheduler:
    """Linear warmup lr * (t + 1) / warmup for t < warmup (Goyal et al. 2017: reaches lr at
    the end of warmup), then schedule ``kind`` over the rest (cosine decay towards 0, or a
    constant lr)."""
    if kind not in SCHEDULES:
        raise unknown_name("schedule", kind, tuple(SCHEDULES))
    main = SCHEDULES[kind](opt, total_steps - warmup_steps)
    if warmup_steps == 0:
        return main
    warm = lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warmup_steps)
    return lr_scheduler.SequentialLR(opt, [warm, main], milestones=[warmup_steps])
