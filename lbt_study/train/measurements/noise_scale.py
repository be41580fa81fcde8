"""The gradient noise scale during training (``gns_simple`` ...; McCandlish et al. 2018).

With gradient estimates from batches of two sizes b < B, the unbiased estimators are

    |G|^2  ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(S)  ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

and B_simple = tr(S) / |G|^2. Both estimators are linear in (|G_b|^2, |G_B|^2), so the EMA
of each estimate equals the estimator applied to the EMAs: numerator and denominator are
smoothed separately, as in the paper. Where the two sizes come from:

- DDP: each worker's local gradient (b = micro-batch x accumulation) before the all-reduce,
  and the all-reduced gradient (B), read in the DDP communication hook (``local_bucket``,
  ``reduced_bucket``) at no extra communication; local values are averaged over workers
  when read.
- One worker with accumulation: each micro-batch's gradient (b = micro-batch) and the
  accumulated one (B = micro-batch x accumulation).
- One worker without accumulation: not measurable; NaN, never a made-up number.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lbt_study.train.batching import BatchPlan, BatchSchedule
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts

SYNC_BN_REASON = (
    "sync_batch across workers: each worker's local gradient carries the statistics path of "
    "every worker's loss, which cancels in the average but not in the local-vs-global "
    "difference the estimator reads; see gns_probe")


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


class NoiseScale(Measurement):
    """Feeds a ``GnsMeter`` from the step: DDP gradient buckets (worker-local vs
    all-reduced) or micro-batch gradients under accumulation on one worker; where its two
    batch sizes come from is ``BatchSchedule.gns_batch_sizes``, and at a batch-growth phase
    the EMAs restart."""

    def __init__(self, meter: GnsMeter, micro: MicroBatchGradients | None,
                 schedule: BatchSchedule, data_parallel: bool) -> None:
        self.meter, self.micro = meter, micro
        self.schedule, self.data_parallel = schedule, data_parallel
        self.plan: BatchPlan | None = None

    @classmethod
    def build(cls, parts: Parts) -> NoiseScale | None:
        """The estimator for the first step's plan, or None when ``measure_gns`` is off, a
        step gives one batch size or the estimate would be invalid (``about`` says which)."""
        schedule, ddp = parts.schedule, parts.ddp
        if not parts.cfg.measure_gns:
            return None
        plan = schedule.plan_at(1)
        sizes = schedule.gns_batch_sizes(plan, ddp is not None)
        if sizes is None or (ddp is not None and schedule.norm == "sync_batch"):
            return None
        meter = GnsMeter(*sizes, parts.cfg.gns_ema, parts.device)
        if ddp is not None:  # fed by the bucket hooks
            return cls(meter, None, schedule, True)
        micro = MicroBatchGradients(list(parts.model.parameters()), plan.accumulation_steps)
        return cls(meter, micro, schedule, False)

    @classmethod
    def about(cls, parts: Parts) -> Row:
        return {"gns_simple_reason": gns_simple_reason(parts.cfg, parts.schedule, parts.size)}

    def use_plan(self, plan: BatchPlan) -> None:
        """At a batch-growth phase the two batch sizes change and the EMAs restart."""
        if plan is self.plan:  # every step calls it: the same phase costs nothing
            return
        self.plan = plan
        sizes = self.schedule.gns_batch_sizes(plan, self.data_parallel)
        if sizes is not None and sizes != (self.meter.small_batch, self.meter.big_batch):
            self.meter.restart(*sizes)

    def start_step(self, step: int, plan: BatchPlan) -> None:
        self.use_plan(plan)
        if self.micro is not None:
            self.micro.start_step()

    def after_backward(self) -> None:
        if self.micro is not None:
            self.micro.after_backward(self.meter)

    def local_bucket(self, bucket: dist.GradBucket) -> None:
        """Squared norm of each bucket before the all-reduce: the worker's local gradient."""
        self.meter.step_small += bucket.buffer().double().pow(2).sum()
        if bucket.is_last():
            self.meter.step_count += 1

    def reduced_bucket(self, reduced: Tensor) -> None:
        """After the all-reduce: the global (averaged) gradient."""
        self.meter.add_big(reduced.double().pow(2).sum())

    def end_step(self) -> None:
        if self.micro is not None:
            self.micro.end_step(self.meter)
        self.meter.end_step()

    def evaluation(self, model: nn.Module, step: int) -> Row:
        return self.meter.read()

    def state_dict(self) -> dict[str, float]:
        """The EMAs, averaged over workers (a collective)."""
        return self.meter.state_dict()

    def load_state_dict(self, state: dict[str, float], step: int) -> None:
        self.use_plan(self.schedule.plan_at(step))  # first: it restarts the EMAs
        self.meter.load_state_dict(state)


def gns_simple_reason(cfg: TrainConfig, schedule: BatchSchedule, workers: int) -> str | None:
    """Why ``gns_simple`` is NaN in this trial, or None where it is measured."""
    if not cfg.measure_gns:
        return "measure_gns is off"
    if workers > 1 and schedule.norm == "sync_batch":
        return SYNC_BN_REASON
    if schedule.gns_batch_sizes(schedule.plan_at(1), workers > 1) is None:
        return "one worker without accumulation: a step gives one batch size"
    return None
