"""Where and how a trial computes on a GPU: the automatic GPU-path choices (all off on CPU)
and the placement of in-memory data (on the device when it fits, else pinned host memory)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lbt_study.train.config import TrainConfig
from lbt_study.train.workload import Data

DATA_ON_DEVICE_FRACTION = 0.25
"""data_on_device=auto moves the data to the GPU when it takes under this share of free memory."""


@dataclass(frozen=True)
class GpuSettings:
    """What the GPU path does in one run, resolved from the config's "auto" choices."""

    bf16: bool  # forward, loss and evaluation under bf16 autocast
    channels_last: bool  # model and 4-D inputs in channels_last memory format
    compile: bool  # torch.compile the module trained
    data_on_device: bool  # train/val tensors moved to the device once
    pin_memory: bool  # data kept on the CPU in pinned memory, batches copied non-blocking
    tf32: bool  # TF32 matmuls and convolutions allowed (CUDA only)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """A fresh autocast context (bf16) or a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def prepare(self, x: Tensor) -> Tensor:
        """An input batch in the model's memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def output(self, out: Tensor) -> Tensor:
        """Model outputs as float32 under bf16 (the loss and metrics are computed in fp32)."""
        return out.float() if self.bf16 and out.is_floating_point() else out

    def peak_dtype(self, dtype: str) -> str:
        """The dtype whose device peak MFU is measured against (measure.PEAK_FLOPS, whose
        float32 entries are TF32 peaks: without TF32 none is listed and MFU is NaN)."""
        if self.bf16:
            return "bfloat16"
        return dtype if dtype != "float32" or self.tf32 else "float32 (no TF32)"


PLAIN = GpuSettings(bf16=False, channels_last=False, compile=False, data_on_device=False,
                    pin_memory=False, tf32=False)
"""No GPU path at all: what every "auto" resolves to on CPU."""


def data_bytes(data: Data) -> int:
    return sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train,
                                                        data.x_val, data.y_val))


def gpu_settings(cfg: TrainConfig, device: torch.device, model: nn.Module,
                 nbytes: int = 0, free_bytes: int | None = None) -> GpuSettings:
    """Resolve precision, channels_last, compile, data placement and TF32 for ``device``.

    Every "auto" is off on CPU. ``nbytes`` is the size of the data; ``free_bytes`` the
    device's free memory (default: torch.cuda.mem_get_info on CUDA).
    """
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda
                                       and cfg.dtype == "float32")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda
                                                  and has_conv)
    on_device = False
    if cuda and cfg.data_on_device == "on":
        on_device = True
    elif cuda and cfg.data_on_device == "auto":
        free = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
        on_device = nbytes < DATA_ON_DEVICE_FRACTION * free
    return GpuSettings(bf16=bf16, channels_last=channels_last, compile=cfg.compile,
                       data_on_device=on_device, pin_memory=cuda and not on_device,
                       tf32=cuda and cfg.tf32)


def place_data(data: Data, settings: GpuSettings, device: torch.device) -> Data:
    """The data on the device, in pinned CPU memory, or as it is."""
    tensors = (data.x_train, data.y_train, data.x_val, data.y_val)
    if settings.data_on_device and device.type != "cpu":
        return Data(*(t.to(device) for t in tensors))
    if settings.pin_memory:
        return Data(*(t.pin_memory() for t in tensors))
    return data


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: Tensor, idx: Tensor, device: torch.device) -> Tensor:
    """``x[idx]`` on ``device``: indexed where ``x`` lives; from pinned memory through a
    pinned buffer (torch's caching host allocator) and a non-blocking copy."""
    if x.device.type != "cpu":
        return x[idx.to(x.device)].to(device)
    if device.type == "cpu":
        return x[idx]
    if device.type == "cuda" and x.is_pinned():
        out = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, pin_memory=True)
        torch.index_select(x, 0, idx, out=out)
        return out.to(device, non_blocking=True)
    return x[idx].to(device, non_blocking=True)
