"""Batch arithmetic, said out loud and checked in one place.

The global batch size ``B`` is split over ``workers`` data-parallel workers and
``accumulation_steps`` micro-batches per worker per optimizer step:

    B = workers * accumulation_steps * micro_batch

Sizes that do not divide are rejected with the numbers shown; a user's batch size is never
rewritten. ``norm_batch_size`` is the number of examples one normalization statistic sees.

``BatchPlan`` is the layout of one step; ``BatchSchedule`` is all of a trial's batch
arithmetic, built once from the config and the training-set size: B of every step (batch
growth included), examples seen after each, warmup steps, the learning rate scaled to B,
each worker's slice, the batch sizes the noise-scale estimators see, the micro-batches the
memory probe tries, and the plans after the probe.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

from lbt_study.errors import UserError
from lbt_study.train.config import TrainConfig

T = TypeVar("T")

BATCH_NORMS = ("batch", "ghost_batch", "sync_batch", "hybrid")
"""Norms whose statistics are taken over the batch dimension."""


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's examples are laid out over workers and micro-batches."""

    global_batch_size: int
    workers: int
    accumulation_steps: int
    micro_batch_size: int
    norm_batch_size: int | None
    """Examples per normalization statistic; None when the norm uses no batch statistics."""

    @property
    def per_worker_batch_size(self) -> int:
        """Examples one worker contributes to one optimizer step."""
        return self.micro_batch_size * self.accumulation_steps

    def describe(self) -> str:
        """One line in the manner of nanoGPT's 'tokens per iteration'."""
        nb = "n/a" if self.norm_batch_size is None else str(self.norm_batch_size)
        return (
            f"B={self.global_batch_size} = {self.workers} workers x "
            f"{self.accumulation_steps} accumulation x {self.micro_batch_size} micro-batch; "
            f"norm batch size {nb}"
        )

    def as_record(self) -> dict[str, int | None]:
        return asdict(self)


def make_batch_plan(
    global_batch_size: int,
    workers: int = 1,
    accumulation_steps: int = 1,
    norm: str = "none",
    ghost_batch_size: int | None = None,
) -> BatchPlan:
    """Check the batch arithmetic and return the plan; raise ``UserError`` if it does not divide."""
    for name, value in (
        ("batch_size", global_batch_size),
        ("workers", workers),
        ("accumulation_steps", accumulation_steps),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    per_step = workers * accumulation_steps
    if global_batch_size % per_step:
        raise UserError(
            f"batch_size {global_batch_size} is not divisible by workers x accumulation_steps "
            f"= {workers} x {accumulation_steps} = {per_step}; choose a batch size that is a "
            f"multiple of {per_step}"
        )
    micro = global_batch_size // per_step
    return BatchPlan(
        global_batch_size=global_batch_size,
        workers=workers,
        accumulation_steps=accumulation_steps,
        micro_batch_size=micro,
        norm_batch_size=_norm_batch_size(norm, micro, workers, ghost_batch_size),
    )


def _norm_batch_size(norm: str, micro: int, workers: int, ghost: int | None) -> int | None:
    if norm == "ghost_batch":
        if ghost is None or ghost < 1:
            raise UserError(f"ghost_batch needs a positive ghost_batch_size, got {ghost!r}")
        if micro % ghost:
            raise UserError(
                f"ghost_batch_size {ghost} does not divide the micro-batch {micro}; "
                f"allowed: a divisor of {micro}"
            )
        return ghost
    if norm == "sync_batch":
        # SyncBatchNorm pools statistics over all workers' micro-batches (not over accumulation).
        return micro * workers
    if norm in ("batch", "hybrid"):
        return micro
    return None


def micro_batch_candidates(plan: BatchPlan, ghost: int | None) -> list[int]:
    """Micro-batches to try, largest first: divisors of the per-worker batch not above the
    planned micro-batch (and multiples of the ghost batch size for Ghost BN)."""
    per_worker = plan.per_worker_batch_size
    return [m for m in range(plan.micro_batch_size, 0, -1)
            if per_worker % m == 0 and (ghost is None or m % ghost == 0)]


def learning_rate(cfg: TrainConfig) -> float:
    """``lr``, or ``base_lr * (B / lr_ref_batch_size) ** lr_scaling_exponent``."""
    if cfg.lr is not None:
        return cfg.lr
    base = float(cfg.base_lr or 0.0)  # set whenever lr is not (TrainConfig checks it)
    return base * (cfg.batch_size / cfg.lr_ref_batch_size) ** cfg.lr_scaling_exponent


def adam_beta2(cfg: TrainConfig) -> float:
    """The second-moment decay the trial uses: ``beta2``, or under ``beta2_rule="half_life"``
    beta2 ** (B / beta2_ref_batch_size), whose half-life ln 0.5 / ln beta2 steps of B examples
    is the reference's in examples."""
    if cfg.beta2_rule == "fixed":
        return cfg.beta2
    return cfg.beta2 ** (cfg.batch_size / cfg.beta2_ref_batch_size)


def adamw_tau_epochs(cfg: TrainConfig, lr: float, train_examples: int) -> float:
    """AdamW's timescale in epochs, tau = B / (lr x weight_decay x D) (Bergsma et al. 2025:
    1 / (lr weight_decay) steps of B examples over a training set of D); NaN for another
    optimizer or without weight decay."""
    if cfg.optimizer != "adamw" or cfg.weight_decay <= 0 or train_examples <= 0:
        return math.nan
    return cfg.batch_size / (lr * cfg.weight_decay * train_examples)


def phase_plans(cfg: TrainConfig) -> dict[int, BatchPlan]:
    """The batch plan of every growth phase's B (raises ``UserError`` if one does not divide)."""
    sizes = [cfg.batch_size * mult for _, mult in cfg.growth_phases()]
    ghost = cfg.ghost_batch_size
    return {b: make_batch_plan(b, cfg.workers, cfg.accumulation_steps, cfg.norm, ghost)
            for b in sizes}


def step_batch_sizes(cfg: TrainConfig, train_examples: int) -> list[int]:
    """The global batch size of every step. Budget ``steps``: each growth phase gets its
    fraction of ``budget_steps`` updates (boundaries rounded, at least one step each); budget
    ``epochs`` or ``examples``: each phase covers its share of the example budget (epochs x
    train_examples, or budget_examples) in ceil(share / B_phase) steps."""
    phases = cfg.growth_phases()
    ends = [*(frac for frac, _ in phases[1:]), 1.0]
    if cfg.budget == "steps":
        total = cfg.budget_steps or 0
        bounds = [round(frac * total) for frac, _ in phases] + [total]
        return [cfg.batch_size * mult for i, (_, mult) in enumerate(phases)
                for _ in range(max(1, bounds[i + 1] - bounds[i]))]
    budget = (cfg.budget_examples or 0) if cfg.budget == "examples" else \
        cfg.epochs * train_examples
    sizes: list[int] = []
    for (frac, mult), end in zip(phases, ends, strict=True):
        batch = cfg.batch_size * mult
        sizes += [batch] * max(1, math.ceil((end - frac) * budget / batch))
    return sizes


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


def geometric_eval_steps(examples_after: list[int], per_doubling: float) -> set[int]:
    """Steps after which to evaluate, spaced evenly in log examples: step 0, the last step,
    and the first step whose examples seen reach each mark E_1 * 2^(j / per_doubling), E_1
    being the first step's examples. Consecutive evaluations are then at most
    2^(1 / per_doubling) apart in examples once steps are finer than the marks (19% at 4 per
    doubling; every step early on), at every batch size alike."""
    last = len(examples_after) - 1
    marks = {0, last}
    if last < 1:
        return marks
    level = -1
    for s in range(1, last + 1):  # the level of E_1 * 2^(j / k) reached; 1e-9: 2^(4/4) is 2
        reached = math.floor(per_doubling * math.log2(examples_after[s] / examples_after[1])
                             + 1e-9)
        if reached > level:
            marks.add(s)
            level = reached
    return marks


@dataclass(frozen=True)
class BatchSchedule:
    """All of one trial's batch arithmetic (see the module docstring). Steps count from 1;
    ``examples_after[s]`` is examples seen after s steps (``examples_after[0] == 0``)."""

    step_batch: tuple[int, ...]
    examples_after: tuple[int, ...]
    warmup_steps: int
    learning_rate: float
    train_examples: int
    plans: dict[int, BatchPlan]
    norm: str
    ghost_batch_size: int | None

    @classmethod
    def build(cls, cfg: TrainConfig, train_examples: int) -> BatchSchedule:
        """Check and lay out the arithmetic; refuse a warmup not shorter than training."""
        plans = phase_plans(cfg)
        sizes = step_batch_sizes(cfg, train_examples)
        warmup = round(cfg.warmup_epochs * train_examples / cfg.batch_size)
        if warmup >= len(sizes):
            raise UserError(f"warmup of {warmup} steps is not shorter than training "
                            f"({len(sizes)} steps at batch size {cfg.batch_size})")
        return cls(tuple(sizes), (0, *itertools.accumulate(sizes)), warmup, learning_rate(cfg),
                   train_examples, plans, cfg.norm, cfg.ghost_batch_size)

    @property
    def total_steps(self) -> int:
        return len(self.step_batch)

    def plan_at(self, step: int) -> BatchPlan:
        """The plan of step ``step`` (step 0, before training, has the first step's)."""
        return self.plans[self.step_batch[max(step, 1) - 1]]

    def worker_slice(self, batch: Sequence[T], rank: int, plan: BatchPlan) -> Sequence[T]:
        """This worker's share of one global batch of indices."""
        per_worker = plan.per_worker_batch_size
        return batch[rank * per_worker:][:per_worker]

    def gns_batch_sizes(self, plan: BatchPlan, data_parallel: bool) -> tuple[int, int] | None:
        """(b, B) of the two-batch-size noise-scale estimate: the per-worker batch against the
        all-reduced one under DDP, a micro-batch against the accumulated batch on one worker;
        None when a step gives only one size (one worker without accumulation)."""
        if data_parallel:
            return plan.per_worker_batch_size, plan.global_batch_size
        if plan.accumulation_steps > 1:
            return plan.micro_batch_size, plan.global_batch_size
        return None

    def micro_batch_candidates(self, global_batch: int) -> list[int]:
        """Micro-batches the memory probe tries for B = ``global_batch``, largest first."""
        ghost = self.ghost_batch_size if self.norm == "ghost_batch" else None
        return micro_batch_candidates(self.plans[global_batch], ghost)

    def micro_batches(self) -> dict[int, int]:
        """The micro-batch of every B (what a checkpoint records of the probe)."""
        return {b: p.micro_batch_size for b, p in self.plans.items()}

    def with_micro_batches(self, micro: dict[int, int]) -> BatchSchedule:
        """The schedule after the memory probe: B kept, smaller micro-batches accumulated."""
        plans = {}
        for b, plan in self.plans.items():
            accumulation = plan.per_worker_batch_size // int(micro[b])
            plans[b] = make_batch_plan(b, plan.workers, accumulation, self.norm,
                                       self.ghost_batch_size)
        return replace(self, plans=plans)

    def eval_steps(self, cfg: TrainConfig) -> set[int]:
        """Steps after which to evaluate: ``geometric_eval_steps`` or ``eval_steps`` (every
        ``eval_every_examples``, else once per epoch), as ``cfg.eval_schedule`` says."""
        examples = list(self.examples_after)
        if cfg.eval_schedule == "geometric":
            marks = geometric_eval_steps(examples, cfg.evals_per_doubling)
            last = len(examples) - 1
            return {s for s in marks if s in (0, last) or s >= cfg.eval_first_step}
        return eval_steps(examples, cfg.eval_every_examples or self.train_examples)

    def describe(self) -> str:
        """The trial's batch arithmetic in one line, printed at its start."""
        phases = "; then ".join(f"{self.step_batch.count(b)} steps of {p.describe()}"
                                for b, p in self.plans.items())
        return (f"{phases}; {self.total_steps} steps, {self.examples_after[-1]} examples "
                f"({self.examples_after[-1] / self.train_examples:g} epochs of "
                f"{self.train_examples}), {self.warmup_steps} warmup steps, "
                f"lr {self.learning_rate:.4g}")
