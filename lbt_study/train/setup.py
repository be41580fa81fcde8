"""Setting up one trial, in one readable order (``assemble``):

data -> batch schedule -> model with its norms -> GPU placement -> memory probe -> FLOPs ->
optimizer and learning-rate schedule -> DDP.

The memory probe runs before DDP wraps the model (it may shrink micro-batches; a backward
through DDP would trigger its reducer), and the module is compiled before DDP wraps it, so
DDP's ``no_sync`` and the measurements' communication hook work on the compiled module. The
measurements (``lbt_study.train.measurements``) are built from the assembled parts, then a
checkpoint's or a branch's weights are loaded (``lbt_study.train.loop.run_training``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim import Optimizer, lr_scheduler

from lbt_study.errors import UserError
from lbt_study.train.batching import BatchPlan, BatchSchedule, adam_beta2
from lbt_study.train.config import TrainConfig
from lbt_study.train.device import (
    GpuSettings,
    data_bytes,
    gather,
    gpu_settings,
    place_data,
    world,
)
from lbt_study.train.measure import (
    device_peak_flops,
    flops_per_example,
    is_out_of_memory,
    restored,
)
from lbt_study.train.norms import NormSpec, use_torch_sync_bn
from lbt_study.train.optim import make_optimizer, make_scheduler
from lbt_study.train.sampling import IndexStream, StratifiedStream, make_stream
from lbt_study.train.workload import Data, Workload, cast_inputs, get_workload

LossFn = Callable[[Tensor, Tensor], Tensor]


def agreed(flag: bool, device: torch.device) -> bool:
    """True on every worker when it is true on any (one all-reduce in a process group), so
    that a decision taken by each worker's clock is the same everywhere."""
    if world()[1] == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class Cadence:
    """A time cadence all workers agree on: ``due()`` once ``every_s`` seconds have passed
    since ``mark()`` on some worker (always, for ``every_s == 0``)."""

    def __init__(self, every_s: float, device: torch.device) -> None:
        self.every_s, self.device = every_s, device
        self.last = time.monotonic()

    def due(self) -> bool:
        if self.every_s <= 0:
            return True
        return agreed(time.monotonic() - self.last >= self.every_s, self.device)

    def mark(self) -> None:
        self.last = time.monotonic()


@dataclass
class Parts:
    """Everything one trial trains with; ``assemble`` builds it."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    size: int
    workload: Workload
    loss: LossFn
    data: Data
    schedule: BatchSchedule
    stream: IndexStream | StratifiedStream
    gpu: GpuSettings
    model: nn.Module
    train_eval_idx: Tensor
    oom_error: str | None = None
    flops_per_example: float = math.nan
    peak_flops: float = math.nan
    net: nn.Module | None = None
    """The module a training step runs: the model, compiled if asked, wrapped in DDP."""
    ddp: DDP | None = None
    opt: Optimizer | None = field(default=None, repr=False)
    sched: lr_scheduler.LRScheduler | None = field(default=None, repr=False)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Training inputs (in the model's memory format) and targets of ``idx``, on device."""
        x, y = self.data.x_train, self.data.y_train
        return self.gpu.prepare(gather(x, idx, self.device)), gather(y, idx, self.device)

    def forward_loss(self, net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        """The training loss of one micro-batch (forward and loss under the run's autocast)."""
        with self.gpu.autocast(self.device):
            return self.loss(self.gpu.output(net(xb)), yb)


def assemble(cfg: TrainConfig, device: torch.device, resume: dict | None = None) -> Parts:
    """Build a trial's parts in the order of the module docstring; ``resume`` is a
    checkpointed state (its micro-batches are used here, the rest, model weights included,
    by ``TrainState.load_state_dict``)."""
    rank, size = world()
    if size != cfg.workers:
        raise UserError(f"config asks for {cfg.workers} workers but world size is {size}")
    workload = get_workload(cfg.workload)
    loss = training_loss(cfg, workload)
    data = cast_inputs(workload.load_data(cfg.seed), getattr(torch, cfg.dtype))
    n = len(data.x_train)
    schedule = BatchSchedule.build(cfg, n)
    stream = make_stream(cfg, data.y_train, min(schedule.step_batch), workload.name)
    model = build_model(cfg, workload, device)
    gpu, model, data = place(cfg, device, model, data)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the fixed train-evaluation subset
    subset = torch.randperm(n, generator=gen)[: min(cfg.train_eval_examples, n)]
    parts = Parts(cfg, device, rank, size, workload, loss, data, schedule, stream, gpu, model,
                  subset)
    if resume is None:
        fit_memory(parts)
    else:
        parts.schedule = schedule.with_micro_batches(resume["micro"])
    parts.flops_per_example = count_flops(parts)
    parts.peak_flops = device_peak_flops(device, gpu.peak_dtype(cfg.dtype))
    _optimize_and_wrap(parts)
    return parts


def _optimize_and_wrap(parts: Parts) -> None:
    """Optimizer and learning-rate schedule, then DDP."""
    cfg, schedule, model, device = parts.cfg, parts.schedule, parts.model, parts.device
    parts.opt = make_optimizer(cfg.optimizer, model.parameters(), lr=schedule.learning_rate,
                               momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               trust_coefficient=cfg.trust_coefficient,
                               betas=(cfg.beta1, adam_beta2(cfg)))
    parts.sched = make_scheduler(parts.opt, schedule.total_steps, schedule.warmup_steps,
                                 cfg.schedule)
    net = torch.compile(model) if parts.gpu.compile else model
    if parts.size > 1:
        net = parts.ddp = DDP(net, device_ids=[device] if device.type == "cuda" else None)
    parts.net = net


def training_loss(cfg: TrainConfig, workload: Workload) -> LossFn:
    """The workload's loss, with label smoothing where asked (cross-entropy workloads only)."""
    if cfg.label_smoothing == 0:
        return workload.loss
    if workload.loss is not nn.functional.cross_entropy:
        raise UserError(f"label_smoothing needs a cross-entropy loss; workload "
                        f"{workload.name!r} uses {getattr(workload.loss, '__name__', 'another')}")
    return functools.partial(nn.functional.cross_entropy, label_smoothing=cfg.label_smoothing)


def build_model(cfg: TrainConfig, workload: Workload, device: torch.device) -> nn.Module:
    """The workload's model with the config's norms, seeded, on the device in ``dtype``."""
    torch.manual_seed(cfg.seed)
    norm = NormSpec(cfg.norm, cfg.ghost_batch_size, cfg.norm_groups)
    model = workload.make_model(cfg.model, norm)
    model = model.to(device=device, dtype=getattr(torch, cfg.dtype))
    return use_torch_sync_bn(model) if device.type == "cuda" else model


def place(cfg: TrainConfig, device: torch.device, model: nn.Module,
          data: Data) -> tuple[GpuSettings, nn.Module, Data]:
    """Resolve the GPU path (``gpu_settings``), then apply it: the model's memory format,
    where the data lives, and (on CUDA) whether TF32 is allowed, set both ways since a
    reused trial process keeps torch's global flags."""
    settings = gpu_settings(cfg, device, model, data_bytes(data))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = place_data(data, settings, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
    return settings, model, data


PROBE_HEADROOM = 0.10
"""A micro-batch fits when its trial forward+backward (augmentation included) needs at most
(1 - PROBE_HEADROOM) of the device memory this process could use when the probe began (free
memory plus its own cached blocks; another trial on a shared GPU holds the rest): the
remaining tenth is for what training adds (optimizer state, compiled kernels, the
allocator's fragmentation). Measured on an H200: ResNet-18 at 65,536 examples fits a bare
forward+backward at 135 GiB of 140, and the next forward of that size ran out."""


def fit_memory(parts: Parts) -> None:
    """For every planned B, the largest micro-batch whose forward+backward fits on every
    worker with ``PROBE_HEADROOM`` to spare, keeping B by more accumulation; sets
    ``oom_error`` when none fits. All workers try the same sizes in the same order and agree
    after each (a worker failing alone would leave the others waiting in a collective)."""
    cfg, schedule = parts.cfg, parts.schedule
    if not cfg.probe_memory or (parts.device.type != "cuda" and cfg.fault_oom_above is None):
        return
    micro = schedule.micro_batches()
    budget = _usable_bytes(parts.device)
    for b in sorted(schedule.plans):
        tried = []
        for size in schedule.micro_batch_candidates(b):
            tried.append(size)
            if _all_fit(parts, size, budget):
                micro[b] = size
                break
        else:
            parts.oom_error = (f"out of memory at every micro-batch for B={b}: tried "
                               f"{', '.join(map(str, tried))}")
            break
    parts.schedule = schedule.with_micro_batches(micro)
    if parts.device.type == "cuda":  # the trial's peak memory is its training's, not a try's
        torch.cuda.reset_peak_memory_stats(parts.device)


def _usable_bytes(device: torch.device) -> float:
    """Device memory this process could still take: free plus its own cached blocks (inf
    on CPU, where only injected out-of-memory errors are probed)."""
    if device.type != "cuda":
        return math.inf
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def within_headroom(needed: float, usable: float) -> bool:
    """Whether a try that took ``needed`` bytes beyond what was allocated before it leaves
    ``PROBE_HEADROOM`` of ``usable`` free."""
    return needed <= (1.0 - PROBE_HEADROOM) * usable


def _all_fit(parts: Parts, micro: int, usable: float = math.inf) -> bool:
    """Whether one forward+backward of ``micro`` examples fits on every worker: the work of
    a training micro-batch, augmentation included, within ``PROBE_HEADROOM`` of
    ``usable`` bytes."""
    fits = torch.tensor([1.0], device=parts.device)
    limit, cuda = parts.cfg.fault_oom_above, parts.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(parts.device)
    before = torch.cuda.memory_allocated(parts.device) if cuda else 0
    try:
        with restored(parts.model):
            if limit is not None and micro > limit:
                raise torch.OutOfMemoryError(f"injected: micro-batch {micro} > {limit}")
            xb, yb = parts.batch(torch.arange(micro) % len(parts.data.x_train))
            if parts.workload.augment is not None:
                gen = torch.Generator(device=parts.device).manual_seed(parts.cfg.seed)
                xb = parts.gpu.prepare(parts.workload.augment(xb, gen))
            parts.forward_loss(parts.model, xb, yb).backward()
            del xb, yb
        if cuda and not within_headroom(torch.cuda.max_memory_allocated(parts.device)
                                        - before, usable):
            fits.zero_()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        fits.zero_()
    if cuda and not fits.item():
        torch.cuda.empty_cache()
    if parts.size > 1:
        dist.all_reduce(fits, op=dist.ReduceOp.MIN)
    return bool(fits.item())


FLOP_COUNT_EXAMPLES = 64
"""FLOPs per example are counted on a batch of about this many (at least the ghost batch
size): the count per example does not depend on the batch, and a forward of the whole
micro-batch could run out of memory where the probe left only its headroom."""


def count_flops(parts: Parts) -> float:
    """Forward+backward FLOPs per example (before DDP wraps the model), if asked and some
    micro-batch fits (a trial that fits none ends ``oom`` without a forward)."""
    if not parts.cfg.measure_flops or parts.oom_error is not None:
        return math.nan
    plan: BatchPlan = parts.schedule.plan_at(1)
    ghost = parts.cfg.ghost_batch_size if parts.cfg.norm == "ghost_batch" else None
    unit = ghost or 1
    size = min(plan.micro_batch_size, max(FLOP_COUNT_EXAMPLES // unit * unit, unit))
    xb, yb = parts.batch(torch.arange(size) % len(parts.data.x_train))
    return flops_per_example(parts.model, parts.loss, xb, yb)
