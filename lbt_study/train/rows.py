"""What a trial reports: evaluations, and the rows that end it.

Every row has the documented history columns (``lbt_study.records.schema.HISTORY_COLUMNS``, with the
workload's ``train_<metric>``/``val_<metric>``) and the trial-level keys of
``lbt_study.records.schema.TRIAL_ONLY_KEYS``, which go to the trials table only. The first row and
the last carry ``config_as_run`` (the parsed config as JSON), ``learning_rate`` and
``batch_schedule``, so the driver records what the trial ran without parsing anything.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lbt_study.train.batching import adam_beta2, adamw_tau_epochs
from lbt_study.train.device import PLAIN, GpuSettings, gather
from lbt_study.train.measure import peak_memory_bytes
from lbt_study.train.measurements.contract import Row
from lbt_study.train.names import ADAM_FAMILY
from lbt_study.train.setup import Parts, world
from lbt_study.train.state import TrainState
from lbt_study.train.workload import Workload

Reporter = Callable[[Row], None]
Checkpointer = Callable[[Row, dict], None]
"""Called instead of the reporter when checkpointing: the row and the full training state."""


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


def replica_spread(model: nn.Module, device: torch.device) -> float:
    """max - min over workers of the sum of all parameters: 0 when replicas agree."""
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    hi, lo = total.clone().to(device), (-total).to(device)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MAX)
    return (hi + lo).item()


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class Interval:
    """Minibatch losses, step times and examples since the previous evaluation."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.times: list[float] = []
        self.examples = 0

    def add(self, loss: float, seconds: float, examples: int) -> None:
        self.losses.append(loss)
        self.times.append(seconds)
        self.examples += examples

    def take(self, parts: Parts) -> Row:
        """The interval's columns of an evaluation row; the interval starts again."""
        times, losses = self.times, self.losses
        seconds = sum(times)
        stats: Row = {
            "minibatch_loss": sum(losses) / len(losses) if losses else math.nan,
            "throughput": self.examples / seconds if seconds > 0 else math.nan,
            "step_time_median": statistics.median(times) if times else math.nan,
            "step_time_p90": quantile(times, 0.9),
            "peak_memory_bytes": peak_memory_bytes(parts.device),
        }
        stats["mfu"] = (parts.flops_per_example * float(stats["throughput"])
                        / (parts.peak_flops * parts.size))
        self._reset()
        return stats


class RowBuilder:
    """Builds a trial's rows from its parts, state and measurements."""

    def __init__(self, parts: Parts, state: TrainState) -> None:
        self.parts, self.state, self.interval = parts, state, Interval()
        self.measurements = state.measurements
        self.about = self.measurements.about()

    def evaluation(self, step: int, status: str, model: nn.Module | None = None) -> Row:
        """Evaluate (train subset and validation set, eval mode) and build the row."""
        t0 = time.perf_counter()
        p = self.parts
        model = model or p.model
        sub = p.train_eval_idx.to(p.data.x_train.device)
        with self.measurements.around_evaluation(model, step):
            train = evaluate(model, p.data.x_train[sub], p.data.y_train[sub], p.workload,
                             p.device, settings=p.gpu)
            val = evaluate(model, p.data.x_val, p.data.y_val, p.workload, p.device,
                           settings=p.gpu)
        seen = p.schedule.examples_after[step]
        row: Row = {"step": step, "examples_seen": seen, "epoch": seen / len(p.data.x_train),
                    "lr": p.opt.param_groups[0]["lr"],
                    "batch_size_current": p.schedule.plan_at(step).global_batch_size}
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["gap_loss"] = val["loss"] - train["loss"]
        if "accuracy" in val:
            row["gap_accuracy"] = train["accuracy"] - val["accuracy"]
        row.update(self.interval.take(p))
        row.update(self.measurements.evaluation(model, step, row))
        if p.size > 1:
            row["replica_spread"] = replica_spread(p.model, p.device)
        self.state.eval_seconds += time.perf_counter() - t0
        return self.finish(row, step, status)

    def final(self, row: Row | None = None) -> Row:
        """The last evaluation, at the current step, of the final model (the weight average
        under SWA), with the measurements' final columns. ``row``: this step's evaluation
        when the trial stops at its target (reused unless the final model is another)."""
        p, state = self.parts, self.state
        model = self.measurements.final_model(p.model, state.step)
        if row is None or model is not p.model:
            row = self.evaluation(state.step, "ok", model)
        row["status"] = "ok"
        row["stopped_at_target"] = state.step < p.schedule.total_steps
        run_throughput = p.schedule.examples_after[state.step] / state.train_seconds
        row["mfu_run"] = p.flops_per_example * run_throughput / (p.peak_flops * p.size)
        row["step_time_median_run"] = statistics.median(state.step_times)
        row["step_time_p90_run"] = quantile(state.step_times, 0.9)
        row.update(self.measurements.final(model))
        return self.with_config(row)

    def stopped(self, step: int, status: str, error: str) -> Row:
        """The row of a run that ended without a final evaluation (oom, diverged)."""
        row: Row = {"step": step, "examples_seen": self.parts.schedule.examples_after[step],
                    "error": error}
        if status == "diverged":
            row["diverged_step"] = step
        return self.with_config(self.finish(row, step, status))

    def finish(self, row: Row, step: int, status: str) -> Row:
        """The trial-level keys every row carries."""
        p, state = self.parts, self.state
        plan = p.schedule.plan_at(step)
        row.update({f"{name}_seconds": s for name, s in self.measurements.seconds.items()})
        row.update(
            train_seconds=state.train_seconds, eval_seconds=state.eval_seconds,
            world_size=p.size, total_steps=p.schedule.total_steps,
            warmup_steps=p.schedule.warmup_steps, train_examples=len(p.data.x_train),
            status=status, objective=row.get(f"val_{p.workload.objective}", math.nan),
            flops_per_example=p.flops_per_example, micro_batch_size=plan.micro_batch_size,
            accumulation_steps_used=plan.accumulation_steps,
            norm_batch_size=plan.norm_batch_size,
        )
        return row

    def with_config(self, row: Row) -> Row:
        """Add what the trial ran: its config, learning rate and batch schedule, and the
        measurements' ``about`` keys (why gns_simple is not measured, None where it is)."""
        p = self.parts
        lr = p.schedule.learning_rate
        adam = p.cfg.optimizer in ADAM_FAMILY
        row.update(config_as_run=p.cfg.model_dump_json(), learning_rate=lr,
                   adam_beta2=adam_beta2(p.cfg) if adam else math.nan,
                   adamw_tau_epochs=adamw_tau_epochs(p.cfg, lr, len(p.data.x_train)),
                   batch_schedule=p.schedule.describe(), **self.about)
        return row
