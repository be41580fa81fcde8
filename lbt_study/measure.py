"""Measurements taken during training: gradient noise scale, sharpness, FLOPs, memory.

Gradient noise scale (McCandlish et al. 2018). With gradient estimates from batches of two
sizes b < B, the unbiased estimators are

    |G|^2  ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(S)  ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

and B_simple = tr(S) / |G|^2. Both estimators are linear in (|G_b|^2, |G_B|^2), so the EMA
of each estimate equals the estimator applied to the EMAs: numerator and denominator are
smoothed separately, as in the paper. Where the two sizes come from:

- DDP: each worker's local gradient (b = micro-batch x accumulation) before the all-reduce,
  and the all-reduced gradient (B), read in a DDP communication hook at no extra
  communication; local values are averaged over workers when read.
- One worker with accumulation: each micro-batch's gradient (b = micro-batch) and the
  accumulated one (B = micro-batch x accumulation).
- One worker without accumulation: not measurable; NaN, never a made-up number.
"""

from __future__ import annotations

import contextlib
import math
import resource
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook


def gns_estimates(small_sq: float, big_sq: float, b: float, big: float) -> tuple[float, float]:
    """(|G|^2, tr(S)) from mean squared gradient norms at batch sizes b < big."""
    grad_sq = (big * big_sq - b * small_sq) / (big - b)
    trace = (small_sq - big_sq) / (1.0 / b - 1.0 / big)
    return grad_sq, trace


class GnsMeter:
    """Debiased EMAs of |G_b|^2 and |G_B|^2, one value per optimizer step.

    Values are kept as device tensors and summed without host synchronisation; ``read()``
    (at evaluation time) averages the local values over workers and returns the estimates.
    """

    def __init__(self, small_batch: int, big_batch: int, ema: float, device: torch.device):
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"gns_ema must be in [0, 1), got {ema}")
        self.small_batch, self.big_batch, self.ema = small_batch, big_batch, ema
        self.device = device
        self.small = torch.zeros((), dtype=torch.float64, device=device)
        self.big = torch.zeros((), dtype=torch.float64, device=device)
        self.weight = 0.0  # sum of EMA weights, for debiasing
        self.step_small = torch.zeros((), dtype=torch.float64, device=device)
        self.step_big = torch.zeros((), dtype=torch.float64, device=device)
        self.step_count = 0  # small-batch samples collected in the current step

    def restart(self, small_batch: int, big_batch: int) -> None:
        """New batch sizes (a batch-growth phase): the EMAs start again."""
        self.small_batch, self.big_batch = small_batch, big_batch
        for t in (self.small, self.big, self.step_small, self.step_big):
            t.zero_()
        self.weight, self.step_count = 0.0, 0

    def state_dict(self) -> dict[str, float]:
        """The EMAs, with the local one averaged over workers (a collective: every worker
        calls it). Averaging keeps every later ``read()`` unchanged, as EMAs are linear."""
        small = self.small.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(small)
            small /= dist.get_world_size()
        return {"small": small.item(), "big": self.big.item(), "weight": self.weight,
                "small_batch": self.small_batch, "big_batch": self.big_batch}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.small_batch, self.big_batch = int(state["small_batch"]), int(state["big_batch"])
        self.small.fill_(state["small"])
        self.big.fill_(state["big"])
        self.weight = float(state["weight"])

    def add_small(self, sq_norm: Tensor) -> None:
        self.step_small += sq_norm
        self.step_count += 1

    def add_big(self, sq_norm: Tensor) -> None:
        self.step_big += sq_norm

    def end_step(self) -> None:
        """Fold the step's values into the EMAs."""
        if self.step_count == 0:
            return
        self.small.mul_(self.ema).add_(self.step_small / self.step_count, alpha=1 - self.ema)
        self.big.mul_(self.ema).add_(self.step_big, alpha=1 - self.ema)
        self.weight = self.ema * self.weight + (1 - self.ema)
        self.step_small.zero_()
        self.step_big.zero_()
        self.step_count = 0

    def read(self) -> dict[str, float]:
        """gns_simple (B_simple, in examples), gns_trace_sigma, gns_grad_sq, gns_small_batch."""
        pair = torch.stack([self.small, self.big])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(pair)
            pair /= dist.get_world_size()
        if self.weight == 0.0:
            return gns_unmeasured()
        small, big = (pair / self.weight).tolist()
        grad_sq, trace = gns_estimates(small, big, self.small_batch, self.big_batch)
        return {"gns_simple": trace / grad_sq if grad_sq != 0 else math.nan,
                "gns_trace_sigma": trace, "gns_grad_sq": grad_sq,
                "gns_small_batch": float(self.small_batch)}


def gns_unmeasured() -> dict[str, float]:
    return {"gns_simple": math.nan, "gns_trace_sigma": math.nan, "gns_grad_sq": math.nan,
            "gns_small_batch": math.nan}


def gns_comm_hook(meter: GnsMeter) -> Callable:
    """A DDP comm hook: squared norm of each bucket before (local) and after (global, averaged)
    the all-reduce. The hook runs only on synchronised backwards, where the local gradient is
    the worker's accumulated gradient."""

    # Unannotated on purpose: DDP checks the annotations against dist.GradBucket and
    # torch.futures.Future, which this module's postponed (string) annotations would fail.
    def hook(state, bucket):  # noqa: ANN001, ANN202
        meter.step_small += bucket.buffer().double().pow(2).sum()
        if bucket.is_last():
            meter.step_count += 1
        fut = allreduce_hook(None, bucket)

        def after(f: torch.futures.Future[Tensor]) -> Tensor:
            out = f.value()
            meter.add_big(out.double().pow(2).sum())
            return out

        return fut.then(after)

    return hook


class MicroBatchGradients:
    """Squared norms of each micro-batch's gradient under accumulation (one worker).

    After micro-batch j the accumulated gradient grows by grad(loss_j) / k; the micro-batch
    gradient is k times that growth.
    """

    def __init__(self, params: list[nn.Parameter], accumulation_steps: int) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.k = accumulation_steps
        self.previous: list[Tensor] | None = None

    def start_step(self) -> None:
        self.previous = None

    def after_backward(self, meter: GnsMeter) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        prev = self.previous
        sq = sum(
            ((g - (prev[i] if prev else 0.0)) * self.k).double().pow(2).sum()
            for i, g in enumerate(grads)
        )
        meter.add_small(sq)
        self.previous = [g.detach().clone() for g in grads]

    def end_step(self, meter: GnsMeter) -> None:
        meter.add_big(sum(g.double().pow(2).sum() for g in (self.previous or [])))


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


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[None]:
    """Run a trial forward/backward: the model's buffers (normalization statistics) and
    gradients are put back as they were afterwards, whatever happened inside."""
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g


def flops_per_example(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor) -> float:
    """Forward + backward FLOPs per example, counted by torch's FlopCounterMode on one batch.
    Gradients and normalization buffers are restored afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with restored(model), counter:
        loss_fn(model(x), y).backward()
    return counter.get_total_flops() / len(x)


PEAK_FLOPS: dict[tuple[str, str], float] = {
    # dense tensor-core peaks from the vendors' data sheets (SXM parts), FLOP/s
    ("H100", "bfloat16"): 989.4e12, ("H100", "float16"): 989.4e12, ("H100", "float32"): 494.7e12,
    ("H200", "bfloat16"): 989.4e12, ("H200", "float16"): 989.4e12, ("H200", "float32"): 494.7e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float16"): 312e12, ("A100", "float32"): 156e12,
}
"""float32 entries are TF32 tensor-core peaks (what matmuls use with TF32 allowed)."""


def device_peak_flops(device: torch.device, dtype: str) -> float:
    """The device's peak FLOP/s for ``dtype`` (NaN on CPU or an unknown GPU)."""
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    for (chip, kind), peak in PEAK_FLOPS.items():
        if chip in name and kind == dtype:
            return peak
    return math.nan


def peak_memory_bytes(device: torch.device) -> float:
    """CUDA max allocated on GPU; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
