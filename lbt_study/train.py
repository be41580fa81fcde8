"""The training loop: plain torch + torch.distributed, no Ray.

``run_training(cfg, report)`` runs one trial on one process. Under an initialised process group
(Ray Train, torchrun, or any launcher) it is one data-parallel worker: every worker draws the
same global batch of ``B`` indices, takes its own slice, runs ``accumulation_steps``
micro-batches (``no_sync`` on all but the last) and DDP averages the gradients, so one update
sees exactly ``B`` examples. ``report(row)`` is called on every worker at every evaluation with
identical, all-reduced values.

On a CUDA device the GPU path turns on by itself (``gpu_settings``; every choice is a
``TrainConfig`` field, and every "auto" is off on CPU, so CPU results do not change): bf16
autocast for forward, loss and evaluation (weights, gradients and optimizer state stay
float32; no loss scaling is needed for bf16), channels_last for convolutional models, the
data moved to the GPU once when it fits in a quarter of free memory (else pinned host memory
and non-blocking copies), TF32 for float32 matmuls and convolutions, and optionally
``torch.compile`` (the module is compiled before DDP wraps it; checkpoints hold the plain
module's state, so they load with or without compile).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim import lr_scheduler, swa_utils

from lbt_study.batching import BatchPlan, make_batch_plan
from lbt_study.config import TrainConfig
from lbt_study.device import PLAIN, GpuSettings, data_bytes, gather, gpu_settings, place_data
from lbt_study.errors import UserError
from lbt_study.measure import (
    GnsMeter,
    MicroBatchGradients,
    device_peak_flops,
    flops_per_example,
    gns_comm_hook,
    gns_unmeasured,
    peak_memory_bytes,
    restored,
    top_hessian_eigenvalue,
)
from lbt_study.norms import NormSpec, hybrid_alpha, use_torch_sync_bn
from lbt_study.optim import LAMB, LARS
from lbt_study.sampling import make_stream
from lbt_study.workload import Data, Workload, cast_inputs, get_workload

Row = dict[str, float | int | str | None]
Reporter = Callable[[Row], None]
Checkpointer = Callable[[Row, dict], None]
"""Called instead of the reporter when checkpointing: the row and the full training state."""


@dataclass
class Outcome:
    """How a training run ended, with the trained (unwrapped) model."""

    status: str  # "ok" or "diverged"
    steps: int
    examples_seen: int
    diverged_step: int | None
    model: nn.Module = field(repr=False)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "lars":
        return LARS(params, lr=lr, momentum=cfg.momentum, weight_decay=wd,
                    trust_coefficient=cfg.trust_coefficient)
    if cfg.optimizer == "lamb":
        return LAMB(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def training_loss(cfg: TrainConfig, workload: Workload) -> Callable[[Tensor, Tensor], Tensor]:
    """The workload's loss, with label smoothing where asked (cross-entropy workloads only)."""
    if cfg.label_smoothing == 0:
        return workload.loss
    if workload.loss is not nn.functional.cross_entropy:
        raise UserError(f"label_smoothing needs a cross-entropy loss; workload "
                        f"{workload.name!r} uses {getattr(workload.loss, '__name__', 'another')}")
    return functools.partial(nn.functional.cross_entropy, label_smoothing=cfg.label_smoothing)


def make_scheduler(
    opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str
) -> lr_scheduler.LRScheduler:
    """Linear warmup lr * (t + 1) / warmup for t < warmup (Goyal et al. 2017: reaches lr at
    the end of warmup), then cosine decay from lr towards 0 over the rest, or a constant lr."""
    rest = total_steps - warmup_steps
    if kind == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=rest)
    else:
        main = lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    if warmup_steps == 0:
        return main
    warm = lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warmup_steps)
    return lr_scheduler.SequentialLR(opt, [warm, main], milestones=[warmup_steps])


def eval_steps(examples_after: list[int], every_examples: int) -> set[int]:
    """Steps after which to evaluate: step 0, each step whose examples seen cross a multiple
    of ``every_examples``, and the last step. ``examples_after[s]`` is examples seen after s
    steps (``examples_after[0] == 0``)."""
    last = len(examples_after) - 1
    marks = {0, last}
    for s in range(1, last + 1):
        if examples_after[s] // every_examples > examples_after[s - 1] // every_examples:
            marks.add(s)
    return marks


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, workload: Workload, device: torch.device,
    chunk: int = 2048, settings: GpuSettings = PLAIN,
) -> dict[str, float]:
    """Mean loss and metrics over (x, y), sharded over workers and reduced as sums and counts;
    under the run's autocast and input memory format when ``settings`` are given."""
    rank, size = world()
    model.eval()
    sums = torch.zeros(2 + len(workload.metrics), dtype=torch.float64, device=device)
    idx = torch.arange(rank, len(x), size)
    for part in idx.split(chunk):
        xb, yb = gather(x, part, device), gather(y, part, device)
        with settings.autocast(device):
            out = settings.output(model(settings.prepare(xb)))
        sums[0] += workload.loss(out, yb).double() * len(part)
        for i, metric in enumerate(workload.metrics):
            sums[1 + i] += metric.fn(out, yb).double()
        sums[-1] += len(part)
    if size > 1:
        dist.all_reduce(sums)
    count = sums[-1].item()
    values = {"loss": sums[0].item() / count}
    for i, metric in enumerate(workload.metrics):
        values[metric.name] = sums[1 + i].item() / count
    return values


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _replica_spread(model: nn.Module, device: torch.device) -> float:
    """max - min over workers of the sum of all parameters: 0 when replicas agree."""
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    hi, lo = total.clone().to(device), (-total).to(device)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MAX)
    return (hi + lo).item()


class _Trainer:
    """State of one run; ``run()`` is the loop. Split up so each piece reads at once."""

    def __init__(self, cfg: TrainConfig, report: Reporter, device: torch.device,
                 checkpoint: Checkpointer | None = None, resume: dict | None = None) -> None:
        self.cfg, self.report, self.device = cfg, report, device
        self.checkpoint, self.step_no = checkpoint, 0
        self.rank, self.size = world()
        if self.size != cfg.workers:
            raise UserError(f"config asks for {cfg.workers} workers but world size is {self.size}")
        self.plan: BatchPlan = make_batch_plan(
            cfg.batch_size, cfg.workers, cfg.accumulation_steps, cfg.norm, cfg.ghost_batch_size
        )
        self.workload = get_workload(cfg.workload)
        self.loss = training_loss(cfg, self.workload)
        self.data: Data = cast_inputs(self.workload.load_data(cfg.seed), getattr(torch, cfg.dtype))
        n = len(self.data.x_train)
        self._plan_steps(n)
        self.stream = make_stream(cfg, self.data.y_train, min(self.step_batch), self.workload.name)
        self.oom_error: str | None = None
        self.model = self._build_model()
        self.gpu = self._setup_gpu()  # memory format, data placement, TF32: before the probe
        if resume is None:
            self._fit_memory()  # before DDP wraps the model: may shrink micro-batches
        else:
            self._restore_plans(resume["micro"])
            self.model.load_state_dict(resume["model"])
        self.plan = self.plans[self.step_batch[0]]
        self.flops_per_example = self._count_flops()
        # compiled first, then wrapped: DDP's no_sync and comm hook work on the compiled module
        self.net = torch.compile(self.model) if self.gpu.compile else self.model
        self.ddp = DDP(self.net, device_ids=[device] if device.type == "cuda" else None) \
            if self.size > 1 else None
        self.opt = make_optimizer(cfg, self.model.parameters())
        self.sched = make_scheduler(self.opt, self.total_steps, self.warmup_steps, cfg.schedule)
        self.gns, self.micro_grads = self._gns_meter()
        self.swa = swa_utils.AveragedModel(self.model) if cfg.swa_start else None
        self.swa_from = math.ceil((cfg.swa_start or 1.0) * self.total_steps)
        # augmentation randomness: per worker and step, from the seed alone (so a run restarted
        # from a checkpoint draws the same crops and flips as an uninterrupted one)
        self.augment_gen = torch.Generator(device=device)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.train_eval_idx = torch.randperm(n, generator=gen)[: min(cfg.train_eval_examples, n)]
        self.eval_at = eval_steps(self.examples_after, cfg.eval_every_examples or n)
        self.peak_flops = device_peak_flops(device, self.gpu.peak_dtype(cfg.dtype))
        self.train_seconds = self.eval_seconds = 0.0
        self.interval_loss, self.interval_times, self.all_times = [], [], []
        self.interval_examples = 0
        if resume is not None:
            self._load(resume)

    def _plan_steps(self, n: int) -> None:
        """B of every step (it grows under batch_growth), examples seen after each, the
        batch plan of each B; refuses a warmup not shorter than training."""
        cfg = self.cfg
        self.step_batch = cfg.step_batch_sizes(n)
        self.examples_after = [0, *itertools.accumulate(self.step_batch)]
        self.total_steps, self.warmup_steps = len(self.step_batch), cfg.warmup_steps(n)
        self.plans = {b: make_batch_plan(b, cfg.workers, cfg.accumulation_steps, cfg.norm,
                                         cfg.ghost_batch_size) for b in set(self.step_batch)}
        if self.warmup_steps >= self.total_steps:
            raise UserError(
                f"warmup of {self.warmup_steps} steps is not shorter than training "
                f"({self.total_steps} steps at batch size {cfg.batch_size})"
            )

    def _setup_gpu(self) -> GpuSettings:
        """Resolve the GPU path (``gpu_settings``), then apply it: the model's memory format,
        where the data lives, and (on CUDA) whether TF32 is allowed, set both ways since a
        reused trial process keeps torch's global flags."""
        settings = gpu_settings(self.cfg, self.device, self.model, data_bytes(self.data))
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.data = place_data(self.data, settings, self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = settings.tf32
            torch.backends.cudnn.allow_tf32 = settings.tf32
        return settings

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        norm = NormSpec(cfg.norm, cfg.ghost_batch_size, cfg.norm_groups)
        model = self.workload.make_model(cfg.model, norm)
        model = model.to(device=self.device, dtype=getattr(torch, cfg.dtype))
        return use_torch_sync_bn(model) if self.device.type == "cuda" else model

    def _fit_memory(self) -> None:
        """For every planned B, the largest micro-batch whose forward+backward fits on every
        worker, keeping B by more accumulation; sets ``oom_error`` when none fits. All
        workers try the same sizes in the same order and agree after each (a worker failing
        alone would leave the others waiting in a collective)."""
        cfg = self.cfg
        if not cfg.probe_memory or (self.device.type != "cuda" and cfg.fault_oom_above is None):
            return
        for b, plan in sorted(self.plans.items()):
            tried = []
            for micro in micro_batch_candidates(plan, cfg.ghost_batch_size if
                                                 cfg.norm == "ghost_batch" else None):
                tried.append(micro)
                if self._all_fit(micro):
                    self.plans[b] = make_batch_plan(
                        b, cfg.workers, plan.per_worker_batch_size // micro, cfg.norm,
                        cfg.ghost_batch_size)
                    break
            else:
                self.oom_error = (f"out of memory at every micro-batch for B={b}: tried "
                                  f"{', '.join(map(str, tried))}")
                return

    def _restore_plans(self, micro: dict[int, int]) -> None:
        cfg = self.cfg
        for b, plan in self.plans.items():
            self.plans[b] = make_batch_plan(b, cfg.workers,
                                            plan.per_worker_batch_size // int(micro[b]),
                                            cfg.norm, cfg.ghost_batch_size)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this step left off (every worker
        calls it: the noise-scale state is averaged over workers)."""
        return {
            "step": self.step_no, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "stream": self.stream.state_dict(), "torch_rng": torch.get_rng_state(),
            "gns": self.gns.state_dict() if self.gns is not None else None,
            "micro": {b: p.micro_batch_size for b, p in self.plans.items()},
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
            "first_loss": getattr(self, "first_loss", math.nan),
            "step_times": torch.tensor(self.all_times, dtype=torch.float64),
        }

    def _load(self, state: dict) -> None:
        self.step_no = int(state["step"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.swa is not None and state["swa"] is not None:
            self.swa.load_state_dict(state["swa"])
        self.stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        self._set_plan(max(self.step_no, 1))  # first: a new phase would restart the EMAs
        if self.gns is not None and state["gns"] is not None:
            self.gns.load_state_dict(state["gns"])
        self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
        if math.isfinite(state["first_loss"]):
            self.first_loss = state["first_loss"]
        self.all_times = state["step_times"].tolist()

    def emit(self, row: Row) -> None:
        """Report a row; with a checkpointer, together with the state to resume from."""
        if self.checkpoint is not None and row["status"] in ("running", "ok"):
            self.checkpoint(row, self.state_dict())
        else:
            self.report(row)

    def _all_fit(self, micro: int) -> bool:
        fits = torch.tensor([1.0], device=self.device)
        try:
            with restored(self.model):
                if self.cfg.fault_oom_above is not None and micro > self.cfg.fault_oom_above:
                    raise torch.OutOfMemoryError(f"injected: micro-batch {micro} > "
                                                 f"{self.cfg.fault_oom_above}")
                part = torch.arange(micro) % len(self.data.x_train)
                xb, yb = self._batch(self.data.x_train, self.data.y_train, part)
                self._forward_loss(self.model, xb, yb).backward()
        except torch.OutOfMemoryError:
            fits.zero_()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if self.size > 1:
            dist.all_reduce(fits, op=dist.ReduceOp.MIN)
        return bool(fits.item())

    def _count_flops(self) -> float:
        """Before DDP wraps the model (a backward through it would trigger DDP's reducer)."""
        if not self.cfg.measure_flops:
            return math.nan
        part = torch.arange(self.plan.micro_batch_size) % len(self.data.x_train)
        xb, yb = self._batch(self.data.x_train, self.data.y_train, part)
        return flops_per_example(self.model, self.loss, xb, yb)

    def _gns_meter(self) -> tuple[GnsMeter | None, MicroBatchGradients | None]:
        cfg, plan = self.cfg, self.plan
        if not cfg.measure_gns:
            return None, None
        if self.ddp is not None:
            meter = GnsMeter(plan.per_worker_batch_size, plan.global_batch_size, cfg.gns_ema,
                             self.device)
            self.ddp.register_comm_hook(None, gns_comm_hook(meter))
            return meter, None
        if plan.accumulation_steps > 1:
            meter = GnsMeter(plan.micro_batch_size, plan.global_batch_size, cfg.gns_ema,
                             self.device)
            return meter, MicroBatchGradients(list(self.model.parameters()),
                                              plan.accumulation_steps)
        return None, None

    def _set_plan(self, step: int) -> None:
        """The batch plan of this step; at a growth phase the noise-scale EMA restarts."""
        plan = self.plans[self.step_batch[step - 1]]
        if plan is self.plan:
            return
        self.plan = plan
        if self.gns is not None:
            small = plan.per_worker_batch_size if self.ddp is not None else plan.micro_batch_size
            self.gns.restart(small, plan.global_batch_size)

    def _batch(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs (in the model's memory format) and targets of ``idx``, on the device."""
        return self.gpu.prepare(gather(x, idx, self.device)), gather(y, idx, self.device)

    def _forward_loss(self, net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        """The training loss of one micro-batch (forward and loss under the run's autocast)."""
        with self.gpu.autocast(self.device):
            return self.loss(self.gpu.output(net(xb)), yb)

    def step(self) -> Tensor:
        """One optimizer update over B examples; returns this worker's mean minibatch loss."""
        plan = self.plan
        idx = self.stream.take(plan.global_batch_size)
        mine = idx[self.rank * plan.per_worker_batch_size:][: plan.per_worker_batch_size]
        net = self.ddp or self.net
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        parts = mine.split(plan.micro_batch_size)
        if self.micro_grads is not None:
            self.micro_grads.start_step()
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            sync = self.ddp is None or last
            xb, yb = self._batch(self.data.x_train, self.data.y_train, part)
            if self.workload.augment is not None:
                self.augment_gen.manual_seed(hash((self.cfg.seed, self.rank, self.step_no, j)))
                xb = self.gpu.prepare(self.workload.augment(xb, self.augment_gen))
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss = self._forward_loss(net, xb, yb)
                (loss / plan.accumulation_steps).backward()
            if self.micro_grads is not None:
                self.micro_grads.after_backward(self.gns)
            loss_sum += loss.detach().double()
        if self.micro_grads is not None:
            self.micro_grads.end_step(self.gns)
        if self.gns is not None:
            self.gns.end_step()
        self.opt.step()
        self.sched.step()
        return loss_sum / plan.accumulation_steps

    def finite_mean_loss(self, local_mean: Tensor) -> float:
        """The step's minibatch loss averaged over workers (NaN if any worker's is not finite)."""
        pair = torch.stack([local_mean, torch.ones_like(local_mean)])
        if self.size > 1:
            dist.all_reduce(pair)
        return (pair[0] / pair[1]).item()

    def evaluation_row(self, step: int, status: str, model: nn.Module | None = None) -> Row:
        t0 = time.perf_counter()
        model = model or self.model
        data, wl, sub = self.data, self.workload, self.train_eval_idx
        sub = sub.to(data.x_train.device)
        train = evaluate(model, data.x_train[sub], data.y_train[sub], wl, self.device,
                         settings=self.gpu)
        val = evaluate(model, data.x_val, data.y_val, wl, self.device, settings=self.gpu)
        seen = self.examples_after[step]
        row: Row = {"step": step, "examples_seen": seen, "epoch": seen / len(data.x_train),
                    "lr": self.opt.param_groups[0]["lr"],
                    "batch_size_current": self.plan.global_batch_size}
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["gap_loss"] = val["loss"] - train["loss"]
        if "accuracy" in val:
            row["gap_accuracy"] = train["accuracy"] - val["accuracy"]
        row.update(self._interval_stats())
        row.update(self.gns.read() if self.gns is not None else gns_unmeasured())
        if self.size > 1:
            row["replica_spread"] = _replica_spread(self.model, self.device)
        self.eval_seconds += time.perf_counter() - t0
        return self._finish_row(row, step, status)

    def _interval_stats(self) -> Row:
        """Minibatch loss, throughput and step times since the previous evaluation."""
        times, losses = self.interval_times, self.interval_loss
        seconds = sum(times)
        stats: Row = {
            "minibatch_loss": sum(losses) / len(losses) if losses else math.nan,
            "throughput": self.interval_examples / seconds if seconds > 0 else math.nan,
            "step_time_median": statistics.median(times) if times else math.nan,
            "step_time_p90": _quantile(times, 0.9),
            "peak_memory_bytes": peak_memory_bytes(self.device),
        }
        stats["mfu"] = (self.flops_per_example * float(stats["throughput"])
                        / (self.peak_flops * self.size))
        self.interval_loss, self.interval_times, self.interval_examples = [], [], 0
        return stats

    def _finish_row(self, row: Row, step: int, status: str) -> Row:
        row.update(
            train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
            world_size=self.size, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
            train_examples=len(self.data.x_train), status=status,
            objective=row.get(f"val_{self.workload.objective}", math.nan),
            flops_per_example=getattr(self, "flops_per_example", math.nan),
            micro_batch_size=self.plan.micro_batch_size,
            accumulation_steps_used=self.plan.accumulation_steps,
            norm_batch_size=self.plan.norm_batch_size,
        )
        return row

    def diverged(self, step: int, mean_loss: float) -> str | None:
        """Why the run diverged at this step, or None."""
        if not math.isfinite(mean_loss):
            return f"non-finite loss at step {step}"
        if step == 1:
            self.first_loss = mean_loss
        factor = self.cfg.divergence_factor
        if factor is not None and mean_loss > factor * self.first_loss:
            return (f"loss {mean_loss:.4g} at step {step} > {factor:g} x the first step's "
                    f"{self.first_loss:.4g}")
        return None

    def timed_step(self, step: int) -> float:
        self.step_no = step
        self._set_plan(step)
        _sync(self.device)
        t0 = time.perf_counter()
        mean_loss = self.finite_mean_loss(self.step())
        _sync(self.device)
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        self.interval_times.append(dt)
        self.all_times.append(dt)
        self.interval_examples += self.plan.global_batch_size
        if self.swa is not None and step >= self.swa_from:
            self.swa.update_parameters(self.model)
        return mean_loss

    def final_row(self) -> Row:
        """The last evaluation: of the weight average under SWA; with sharpness if asked."""
        model = self.model
        if self.swa is not None:
            data, micro = self.data, self.plan.micro_batch_size
            batches = (self.gpu.prepare(gather(data.x_train, p, self.device)) for p in
                       torch.arange(len(data.x_train)).split(micro))
            swa_utils.update_bn(batches, self.swa)
            model = self.swa.module
        row = self.evaluation_row(self.total_steps, "ok", model)
        run_throughput = self.examples_after[-1] / self.train_seconds
        row["mfu_run"] = self.flops_per_example * run_throughput / (self.peak_flops * self.size)
        row["step_time_median_run"] = statistics.median(self.all_times)
        row["step_time_p90_run"] = _quantile(self.all_times, 0.9)
        row["hybrid_alpha"] = hybrid_alpha(model)
        row["swa"] = self.swa is not None
        if self.cfg.sharpness_examples:
            sub = self.train_eval_idx[: self.cfg.sharpness_examples]
            xb, yb = self._batch(self.data.x_train, self.data.y_train, sub)
            row["sharpness"] = top_hessian_eigenvalue(model, self.workload.loss, xb, yb,
                                                      iters=self.cfg.sharpness_iters)
        return row

    def run(self) -> Outcome:
        if self.oom_error is not None:
            row = {"step": 0, "examples_seen": 0, "error": self.oom_error}
            self.report(self._finish_row(row, 0, "oom"))
            return Outcome("oom", 0, 0, None, self.model)
        start = self.step_no
        if start == 0:
            self.emit(self.evaluation_row(0, "running"))
        for step in range(start + 1, self.total_steps + 1):
            mean_loss = self.timed_step(step)
            reason = self.diverged(step, mean_loss)
            if reason is not None:
                seen = self.examples_after[step]
                row = {"step": step, "examples_seen": seen, "diverged_step": step,
                       "error": reason}
                self.report(self._finish_row(row, step, "diverged"))
                return Outcome("diverged", step, seen, step, self.model)
            self.interval_loss.append(mean_loss)
            if step == self.total_steps:
                self.emit(self.final_row())
            elif step in self.eval_at:
                self.emit(self.evaluation_row(step, "running"))
        return Outcome("ok", self.total_steps, self.examples_after[-1], None, self.model)


def micro_batch_candidates(plan: BatchPlan, ghost: int | None) -> list[int]:
    """Micro-batches to try, largest first: divisors of the per-worker batch not above the
    planned micro-batch (and multiples of the ghost batch size for Ghost BN)."""
    per_worker = plan.per_worker_batch_size
    return [m for m in range(plan.micro_batch_size, 0, -1)
            if per_worker % m == 0 and (ghost is None or m % ghost == 0)]


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def run_training(
    cfg: TrainConfig, report: Reporter | None = None, device: torch.device | None = None,
    checkpoint: Checkpointer | None = None, resume: dict | None = None,
) -> Outcome:
    """Train one configuration on this process (one worker of a DDP group, or alone).

    ``report(row)`` gets every evaluation; with ``checkpoint``, evaluations go to
    ``checkpoint(row, state)`` instead, and ``resume=state`` continues from such a state.
    """
    device = device or torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    return _Trainer(cfg, report or (lambda row: None), device, checkpoint, resume).run()
