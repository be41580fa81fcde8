"""The training loop: plain torch + torch.distributed, no Ray.

``run_training(cfg, report)`` runs one trial on one process. Under an initialised process group
(Ray Train, torchrun, or any launcher) it is one data-parallel worker: every worker draws the
same global batch of ``B`` indices, takes its own slice, runs ``accumulation_steps``
micro-batches (``no_sync`` on all but the last) and DDP averages the gradients, so one update
sees exactly ``B`` examples. ``report(row)`` is called on every worker at every evaluation with
identical, all-reduced values.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim import lr_scheduler

from lbt_study.batching import BatchPlan, make_batch_plan
from lbt_study.config import TrainConfig
from lbt_study.errors import UserError
from lbt_study.norms import NormSpec, use_torch_sync_bn
from lbt_study.workload import Data, Workload, cast_inputs, get_workload

Row = dict[str, float | int | str | None]
Reporter = Callable[[Row], None]


@dataclass
class Outcome:
    """How a training run ended, with the trained (unwrapped) model."""

    status: str  # "ok" or "diverged"
    steps: int
    examples_seen: int
    diverged_step: int | None
    model: nn.Module = field(repr=False)


class IndexStream:
    """Training indices without replacement: seeded permutations laid end to end.

    Every step takes exactly ``B`` indices, crossing epoch boundaries where needed, so that
    ``examples seen = steps x B`` for every batch size. Workers built with the same seed
    draw the same global batches.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self._gen = torch.Generator().manual_seed(seed)
        self._buffer = torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> Tensor:
        while len(self._buffer) < k:
            self._buffer = torch.cat([self._buffer, torch.randperm(self.n, generator=self._gen)])
        out, self._buffer = self._buffer[:k], self._buffer[k:]
        return out


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    lr = cfg.learning_rate
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


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


def eval_steps(total_steps: int, batch_size: int, every_examples: int) -> set[int]:
    """Steps after which to evaluate: step 0, each crossing of a multiple of
    ``every_examples`` examples seen, and the last step."""
    marks = {0, total_steps}
    for s in range(1, total_steps + 1):
        if (s * batch_size) // every_examples > ((s - 1) * batch_size) // every_examples:
            marks.add(s)
    return marks


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, workload: Workload, device: torch.device,
    chunk: int = 2048,
) -> dict[str, float]:
    """Mean loss and metrics over (x, y), sharded over workers and reduced as sums and counts."""
    rank, size = world()
    model.eval()
    sums = torch.zeros(2 + len(workload.metrics), dtype=torch.float64, device=device)
    idx = torch.arange(rank, len(x), size)
    for part in idx.split(chunk):
        xb, yb = x[part].to(device, non_blocking=True), y[part].to(device, non_blocking=True)
        out = model(xb)
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

    def __init__(self, cfg: TrainConfig, report: Reporter, device: torch.device) -> None:
        self.cfg, self.report, self.device = cfg, report, device
        self.rank, self.size = world()
        if self.size != cfg.workers:
            raise UserError(f"config asks for {cfg.workers} workers but world size is {self.size}")
        self.plan: BatchPlan = make_batch_plan(
            cfg.batch_size, cfg.workers, cfg.accumulation_steps, cfg.norm, cfg.ghost_batch_size
        )
        self.workload = get_workload(cfg.workload)
        dtype = getattr(torch, cfg.dtype)
        self.data: Data = cast_inputs(self.workload.load_data(cfg.seed), dtype)
        n = len(self.data.x_train)
        self.total_steps = cfg.total_steps(n)
        self.warmup_steps = cfg.warmup_steps(n)
        if self.warmup_steps >= self.total_steps:
            raise UserError(
                f"warmup of {self.warmup_steps} steps is not shorter than training "
                f"({self.total_steps} steps at batch size {cfg.batch_size})"
            )
        torch.manual_seed(cfg.seed)
        norm = NormSpec(cfg.norm, cfg.ghost_batch_size, cfg.norm_groups)
        model = self.workload.make_model(cfg.model, norm).to(device=device, dtype=dtype)
        if device.type == "cuda":
            model = use_torch_sync_bn(model)
        self.model: nn.Module = model
        self.ddp = DDP(model, device_ids=[device] if device.type == "cuda" else None) \
            if self.size > 1 else None
        self.opt = make_optimizer(cfg, model.parameters())
        self.sched = make_scheduler(self.opt, self.total_steps, self.warmup_steps, cfg.schedule)
        self.stream = IndexStream(n, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        k = min(cfg.train_eval_examples, n)
        self.train_eval_idx = torch.randperm(n, generator=gen)[:k]
        every = cfg.eval_every_examples or n
        self.eval_at = eval_steps(self.total_steps, cfg.batch_size, every)
        self.train_seconds = self.eval_seconds = 0.0
        self.interval_loss = torch.zeros(2, dtype=torch.float64, device=device)
        self.interval_examples, self.interval_seconds = 0, 0.0

    def step(self) -> float:
        """One optimizer update over B examples; returns this worker's mean minibatch loss."""
        plan, data = self.plan, self.data
        idx = self.stream.take(plan.global_batch_size)
        mine = idx[self.rank * plan.per_worker_batch_size:][: plan.per_worker_batch_size]
        net = self.ddp or self.model
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        parts = mine.split(plan.micro_batch_size)
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            ctx = self.ddp.no_sync() if self.ddp is not None and not last \
                else contextlib.nullcontext()
            xb = data.x_train[part].to(self.device, non_blocking=True)
            yb = data.y_train[part].to(self.device, non_blocking=True)
            with ctx:
                loss = self.workload.loss(net(xb), yb)
                (loss / plan.accumulation_steps).backward()
            loss_sum += loss.detach().double()
        self.opt.step()
        self.sched.step()
        return loss_sum / plan.accumulation_steps

    def finite_mean_loss(self, local_mean: Tensor) -> float:
        """The step's minibatch loss averaged over workers (NaN if any worker's is not finite)."""
        pair = torch.stack([local_mean, torch.ones_like(local_mean)])
        if self.size > 1:
            dist.all_reduce(pair)
        return (pair[0] / pair[1]).item()

    def evaluation_row(self, step: int, status: str) -> Row:
        t0 = time.perf_counter()
        data, wl = self.data, self.workload
        train = evaluate(self.model, data.x_train[self.train_eval_idx],
                         data.y_train[self.train_eval_idx], wl, self.device)
        val = evaluate(self.model, data.x_val, data.y_val, wl, self.device)
        row: Row = {"step": step, "examples_seen": step * self.plan.global_batch_size,
                    "epoch": step * self.plan.global_batch_size / len(data.x_train),
                    "lr": self.opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["gap_loss"] = val["loss"] - train["loss"]
        if "accuracy" in val:
            row["gap_accuracy"] = train["accuracy"] - val["accuracy"]
        n_loss = self.interval_loss[1].item()
        row["minibatch_loss"] = self.interval_loss[0].item() / n_loss if n_loss else math.nan
        row["throughput"] = (self.interval_examples / self.interval_seconds
                             if self.interval_seconds > 0 else math.nan)
        if self.size > 1:
            row["replica_spread"] = _replica_spread(self.model, self.device)
        self.interval_loss.zero_()
        self.interval_examples, self.interval_seconds = 0, 0.0
        self.eval_seconds += time.perf_counter() - t0
        return self._finish_row(row, step, status)

    def _finish_row(self, row: Row, step: int, status: str) -> Row:
        row.update(
            train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
            world_size=self.size, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
            train_examples=len(self.data.x_train), status=status,
            objective=row.get(f"val_{self.workload.objective}", math.nan),
        )
        return row

    def run(self) -> Outcome:
        self.report(self.evaluation_row(0, "running"))
        for step in range(1, self.total_steps + 1):
            _sync(self.device)
            t0 = time.perf_counter()
            mean_loss = self.finite_mean_loss(self.step())
            _sync(self.device)
            dt = time.perf_counter() - t0
            self.train_seconds += dt
            self.interval_seconds += dt
            self.interval_examples += self.plan.global_batch_size
            if not math.isfinite(mean_loss):
                row = {"step": step, "examples_seen": step * self.plan.global_batch_size,
                       "diverged_step": step}
                self.report(self._finish_row(row, step, "diverged"))
                return Outcome("diverged", step, row["examples_seen"], step, self.model)
            self.interval_loss += torch.tensor([mean_loss, 1.0], dtype=torch.float64,
                                               device=self.device)
            if step in self.eval_at:
                status = "ok" if step == self.total_steps else "running"
                self.report(self.evaluation_row(step, status))
        return Outcome("ok", self.total_steps, self.total_steps * self.plan.global_batch_size,
                       None, self.model)


def run_training(
    cfg: TrainConfig, report: Reporter | None = None, device: torch.device | None = None
) -> Outcome:
    """Train one configuration on this process (one worker of a DDP group, or alone)."""
    device = device or torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    return _Trainer(cfg, report or (lambda row: None), device).run()
