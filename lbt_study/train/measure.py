"""Plain measurement helpers of a trial's setup and steps: FLOPs per example, the device's
peak FLOP/s, peak memory, and telling an allocation failure from another error.

They are not per-evaluation measurements (``lbt_study.train.measurements``): FLOPs are
counted once, before training, and feed MFU; peak memory is read with each evaluation's
interval statistics; the out-of-memory test classifies errors for the memory probe and the
driver. None has a schedule, a state or columns of its own.
"""

from __future__ import annotations

import contextlib
import math
import resource
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn


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


OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "CUDNN_STATUS_ALLOC_FAILED",
                       "CUBLAS_STATUS_ALLOC_FAILED")
"""How an allocation failure reads where torch raises a plain RuntimeError for it: its CPU
allocator ("DefaultCPUAllocator: can't allocate memory"), cuDNN and cuBLAS workspaces."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (torch.OutOfMemoryError, or a RuntimeError
    whose text says so), not another error."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in OUT_OF_MEMORY_TEXTS)


def peak_memory_bytes(device: torch.device) -> float:
    """CUDA max allocated on GPU; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
