"""The adaptive protocol: the per-batch-size protocol in rounds until the critical batch
size is known well enough (``stop_when=StopWhen(...)``). Round 0 is ``trials`` trials at
every batch size; the rounds, their stop rule and where each round's trials go are run by
``lbt_study.study.rounds`` (this protocol's ``runner``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from lbt_study.errors import UserError
from lbt_study.study.protocols.base import Cell
from lbt_study.study.protocols.per_batch_size import PerBatchSize

if TYPE_CHECKING:
    from lbt_study.study.spec import Study


class StopWhen(BaseModel):
    """An adaptive per-batch-size study (``Study(stop_when=...)``): after round 0
    (``Study.trials`` trials at every batch size) it adds ``round_trials`` trials per round,
    by ``allocation`` (lbt_study.analysis.adaptive), until the interval's (hi - lo) /
    estimate, at the level ``adjust`` sets, <= ``b_crit_rel_width`` (and the LR exponent's
    interval width <= ``lr_exponent_width``, if given) with every batch size at
    ``min_trials`` or more, or ``max_trials`` trials are spent. No batch size gets more than
    ``max_trials_ratio`` times the trials of the least-tried one (a minimum over more trials
    is lower: uneven counts bias B_crit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    b_crit_rel_width: float = Field(gt=0)
    max_trials: int = Field(gt=0)
    lr_exponent_width: float | None = Field(default=None, gt=0)
    round_trials: int | None = Field(default=None, gt=0)
    """Trials added per round (default: one per batch size)."""
    min_trials: int = Field(default=3, ge=2)
    max_trials_ratio: float = Field(default=2.0, ge=1.0)
    adjust: Literal["bonferroni", "none"] = "bonferroni"
    """The interval's level at each look: "bonferroni", 1 - (1 - ci) / looks with looks = 1 +
    ceil((max_trials - round 0's trials) / round_trials), so the interval it stops with
    covers at >= ci whichever look stops it; "none": ci at every look (stopping the first
    time a 95% interval is narrow picks intervals that miss: planted coverage 0.75-0.82)."""
    allocation: Literal["balanced", "nearest", "influence"] = "balanced"
    """Where a round's trials go (lbt_study.analysis.adaptive): "balanced", to the
    least-tried batch sizes, ties nearest the B_crit estimate; "nearest", nearest the
    estimate first; "influence", where holding the frontier point exact shrinks the
    trial-bootstrap interval most. All within min_trials and max_trials_ratio."""


class Adaptive(PerBatchSize):
    name = "adaptive"
    uses = frozenset({"batch_sizes", "stop_when"})
    runner = "lbt_study.study.rounds:run_adaptive"

    def check(self, study: Study) -> None:
        """Batch sizes alone (no norms or budgets), at least 3 of them (the fit needs 3
        points), a stop rule, and a budget that round 0 fits in."""
        super().check(study)
        if study.stop_when is None:
            raise ValueError("protocol 'adaptive' needs stop_when=StopWhen(...)")
        if len(set(study.batch_sizes)) < 3:
            raise ValueError(f"stop_when needs at least 3 batch sizes (B_crit is fitted to 3 "
                             f"or more points), got {list(study.batch_sizes)}")
        first = study.trials * len(study.batch_sizes)
        if study.stop_when.max_trials < first:
            raise ValueError(f"stop_when.max_trials {study.stop_when.max_trials} is below "
                             f"round 0's {study.trials} trials x {len(study.batch_sizes)} "
                             f"batch sizes = {first}")

    def preflight(self, study: Study, target: float | None) -> None:
        """Checked again as a ``UserError`` (``--trials`` copies the study without
        validating it); B_crit comes from steps to target, so a target is needed."""
        try:
            self.check(study)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if target is None:
            raise UserError("stop_when needs a target (Study(target=...) or the workload's): "
                            "B_crit comes from steps to target")

    def cell(self, study: Study, batch_size: int) -> Cell:
        return next(c for c in self.cells(study) if c.overrides["batch_size"] == batch_size)
