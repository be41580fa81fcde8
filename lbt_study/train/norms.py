"""The normalization factory every built-in model uses.

``make_norm(spec, num_features, spatial)`` returns a module for one of ``NORMS``:

- ``batch``: torch BatchNorm over the micro-batch.
- ``ghost_batch``: BatchNorm over virtual batches of ``ghost_batch_size`` (Hoffer et al. 2017),
  vectorised by reshaping, not a Python loop over chunks.
- ``sync_batch``: statistics pooled over all DDP workers. torch's ``SyncBatchNorm`` on GPU
  (swapped in by ``use_torch_sync_bn``); torch's refuses CPU tensors, so on CPU (gloo) the same
  statistics are all-reduced, differentiably.
- ``layer``: LayerNorm over the features (GroupNorm with one group for feature maps).
- ``group``: GroupNorm with ``norm_groups`` groups.
- ``instance``: InstanceNorm2d with affine parameters (feature maps only).
- ``none``: identity.
- ``hybrid``: batch and layer statistics mixed by a learnable alpha = sigmoid(theta) per layer
  (``HybridNorm``); alpha is recorded at the end of training.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lbt_study.errors import UserError, unknown_name
from lbt_study.train.names import NORMS, registered


@dataclass(frozen=True)
class NormSpec:
    """A normalization choice and its options."""

    kind: str = "batch"
    ghost_batch_size: int | None = None
    groups: int = 4

    def __post_init__(self) -> None:
        if self.kind not in NORMS:
            raise unknown_name("normalization", self.kind, NORMS)
        ghost = self.ghost_batch_size
        if self.kind == "ghost_batch" and (ghost is None or ghost < 1):
            raise UserError(
                f"norm 'ghost_batch' needs ghost_batch_size >= 1, got {self.ghost_batch_size!r}"
            )
        if self.groups < 1:
            raise UserError(f"norm_groups must be >= 1, got {self.groups}")


NormFactory = Callable[["NormSpec", int, bool], nn.Module]
"""(spec, num_features, spatial) -> the normalization module."""


def make_norm(spec: NormSpec, num_features: int, spatial: bool) -> nn.Module:
    """A normalization layer for ``num_features`` channels of (N, C) or (N, C, H, W) input."""
    if spec.kind not in NORM_FACTORIES:
        raise unknown_name("normalization", spec.kind, NORMS)
    return NORM_FACTORIES[spec.kind](spec, num_features, spatial)


def _group(spec: NormSpec, num_features: int, spatial: bool) -> nn.Module:
    if num_features % spec.groups:
        raise UserError(
            f"norm_groups {spec.groups} does not divide a layer's {num_features} channels; "
            f"allowed: a divisor of {num_features}"
        )
    return nn.GroupNorm(spec.groups, num_features)


def _instance(spec: NormSpec, num_features: int, spatial: bool) -> nn.Module:
    if not spatial:
        raise UserError(
            "norm 'instance' needs feature maps (a convolutional model); "
            "this model has vector features: use 'layer' or choose a convolutional model"
        )
    return nn.InstanceNorm2d(num_features, affine=True)


class GhostBatchNorm(nn.Module):
    """BatchNorm whose training statistics come from virtual batches of ``ghost_batch_size``.

    Each ghost batch is normalised by its own mean and (biased) variance; the running estimates
    move toward the average over ghost batches of their mean and unbiased variance. With
    ``ghost_batch_size`` equal to the batch this is exactly ``nn.BatchNorm``.
    """

    def __init__(
        self, num_features: int, ghost_batch_size: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.ghost_batch_size = ghost_batch_size
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if x.shape[0] % self.ghost_batch_size:
            raise ValueError(f"ghost_batch_size {self.ghost_batch_size} does not divide the "
                             f"batch of {x.shape[0]}")
        return chunk_normalize(self, x, self.ghost_batch_size, update=True)


def chunk_normalize(m: nn.Module, x: Tensor, chunk: int, update: bool) -> Tensor:
    """``x`` normalised as training normalises it, each consecutive chunk of ``chunk``
    examples by its own mean and (biased) variance, then ``m``'s affine parameters (Ghost
    BN's forward, one reshape, no loop over chunks). With ``update`` the running estimates
    move by ``m.momentum`` toward the chunks' average mean and unbiased variance (for a
    BatchNorm whose micro-batches are the chunks: the statistics training would see).
    Without, nothing is written (the form ``torch.func`` transforms need)."""
    n = x.shape[0]
    ghosts = x.reshape(n // chunk, chunk, x.shape[1], -1)  # (chunks, chunk, C, positions)
    mean = ghosts.mean(dim=(1, 3), keepdim=True)
    centred = ghosts - mean  # two passes: as stable as var_mean, and several times faster
    var = centred.square().mean(dim=(1, 3), keepdim=True)
    y = (centred * torch.rsqrt(var + m.eps)).reshape(x.shape)
    if update:
        with torch.no_grad():
            count = chunk * math.prod(x.shape[2:])
            unbiased = var * (count / max(count - 1, 1))
            dtype = m.running_mean.dtype  # float32 buffers, even under bf16 autocast
            m.running_mean.lerp_(mean.mean(0).flatten().to(dtype), m.momentum)
            m.running_var.lerp_(unbiased.mean(0).flatten().to(dtype), m.momentum)
    if m.weight is None:
        return y
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return y * m.weight.view(shape) + m.bias.view(shape)


def chunk_size_of(m: nn.Module, micro: int) -> int | None:
    """The chunk ``m`` computes its training statistics over, for micro-batches of
    ``micro``: its ghost size (Ghost BN), the micro-batch (BatchNorm, SyncBN on one worker);
    None for a norm ``chunk_normalize`` cannot stand in for (HybridNorm mixes in layer
    statistics)."""
    if isinstance(m, GhostBatchNorm):
        return m.ghost_batch_size
    if isinstance(m, _BatchNorm) and not isinstance(m, HybridNorm):
        return micro
    return None


@contextlib.contextmanager
def chunked_statistics(modules: list[nn.Module], chunks: list[int],
                       update: bool) -> Iterator[None]:
    """Within: each of ``modules`` normalises by consecutive chunks of its entry of
    ``chunks`` (``chunk_normalize``), in any mode; after: its own forward again."""
    try:
        for m, chunk in zip(modules, chunks, strict=True):
            m.forward = functools.partial(chunk_normalize, m, chunk=chunk, update=update)
        yield
    finally:
        for m in modules:
            m.__dict__.pop("forward", None)


class AllReduceSum(torch.autograd.Function):
    """Differentiable sum over workers: the gradient of each input is the sum over workers of
    the output's gradients (torch.distributed.nn's all_reduce, which torch 2.13 deprecates)."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(_BatchNorm):
    """Batch statistics pooled over all DDP workers, on any device.

    In training under a process group of more than one worker, the per-channel sum, sum of
    squares and count are all-reduced with ``AllReduceSum`` (gradients flow back
    through the reduction); otherwise it is ordinary BatchNorm. It is deliberately not a
    ``torch.nn.SyncBatchNorm``, which refuses CPU tensors (and DDP refuses it on CPU); on a GPU,
    ``use_torch_sync_bn`` swaps it for torch's fused implementation.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, *range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = self.num_features
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0.0)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        with torch.no_grad():
            n = float(total)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
            self.num_batches_tracked += 1
        return y * self.weight.view(shape) + self.bias.view(shape)


def use_torch_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every ``SyncBatchNorm`` of ours by ``torch.nn.SyncBatchNorm`` (GPU only)."""
    for name, child in module.named_children():
        if isinstance(child, SyncBatchNorm):
            torch_bn = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum)
            torch_bn.load_state_dict(child.state_dict())
            setattr(module, name, torch_bn.to(child.weight.device, child.weight.dtype))
        else:
            use_torch_sync_bn(child)
    return module


class HybridNorm(_BatchNorm):
    """Normalise with a learnable mix of batch and layer statistics.

    With alpha = sigmoid(theta) (theta starts at 0, alpha at 0.5), the mean is
    alpha * mu_batch + (1 - alpha) * mu_layer, and likewise the variance; mu_batch is per
    channel over the batch (and positions), mu_layer per example over channels (and positions).
    In eval mode the batch part uses running estimates, as BatchNorm does. alpha -> 1 is
    BatchNorm, alpha -> 0 LayerNorm (with per-channel affine parameters).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps, momentum)
        self.theta = nn.Parameter(torch.zeros(()))

    @property
    def alpha(self) -> float:
        return float(torch.sigmoid(self.theta.detach()))

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        batch_dims = (0, *range(2, x.dim()))
        if self.training:
            var_b, mean_b = torch.var_mean(x, dim=batch_dims, correction=0)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.num_batches_tracked += 1
                # momentum None (as torch.optim.swa_utils.update_bn sets it): a cumulative
                # average, as BatchNorm keeps one
                factor = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean_b.detach(), factor)
                self.running_var.lerp_(var_b.detach() * (n / max(n - 1, 1)), factor)
        else:
            mean_b, var_b = self.running_mean, self.running_var
        layer_dims = tuple(range(1, x.dim()))
        var_l, mean_l = torch.var_mean(x, dim=layer_dims, correction=0, keepdim=True)
        a = torch.sigmoid(self.theta)
        mean = a * mean_b.view(shape) + (1 - a) * mean_l
        var = a * var_b.view(shape) + (1 - a) * var_l
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def hybrid_alpha(model: nn.Module) -> float:
    """Mean alpha over the model's HybridNorm layers (NaN if it has none)."""
    alphas = [m.alpha for m in model.modules() if isinstance(m, HybridNorm)]
    return sum(alphas) / len(alphas) if alphas else math.nan


BATCH_STATISTIC_MODULES = (_BatchNorm, GhostBatchNorm)
"""Modules normalising by batch statistics (BatchNorm, SyncBN, HybridNorm, Ghost BN)."""


NORM_FACTORIES: dict[str, NormFactory] = {
    "batch": lambda s, n, spatial: nn.BatchNorm2d(n) if spatial else nn.BatchNorm1d(n),
    "ghost_batch": lambda s, n, spatial: GhostBatchNorm(n, s.ghost_batch_size or 0),
    "sync_batch": lambda s, n, spatial: SyncBatchNorm(n),
    "layer": lambda s, n, spatial: nn.GroupNorm(1, n) if spatial else nn.LayerNorm(n),
    "group": _group,
    "instance": _instance,
    "none": lambda s, n, spatial: nn.Identity(),
    "hybrid": lambda s, n, spatial: HybridNorm(n),
}
"""The norm registry: name -> factory, in the order studies list them."""
registered("norm", NORM_FACTORIES, NORMS)
