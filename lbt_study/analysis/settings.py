"""What the analyses of one study run with: the settings (``AnalysisSettings``, defaults those
of the analysis functions) and what study.json says (``StudyInfo``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbt_study.analysis._checks import check_fraction, check_positive
from lbt_study.analysis.best import best_per_batch_size
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.scaling import (
    classify_regimes,
    critical_batch_size,
    critical_batch_size_bootstrap,
)
from lbt_study.analysis.throughput import throughput_frontier
from lbt_study.records.schema import STATUSES
from lbt_study.train.config import DEFAULT_CROSSING


def _default(fn: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of ``fn``: the settings follow the analyses."""
    return inspect.signature(fn).parameters[name].default


@dataclass(frozen=True)
class AnalysisSettings:
    """The parameters the analyses run with (defaults: those of the analysis functions).

    n_boot, seed: the trial-level bootstraps of the critical batch size and the lr
    exponent; ci: their level, the frontier's and every fitted interval's. zhang_excess:
    Zhang et al. (2024)'s critical batch size is where steps exceed perfect scaling by this
    fraction. perfect_tol, plateau_tol: the regime thresholds of ``classify_regimes``.
    statuses: the statuses that compete for best trial, frontier, fits, gaps and the Pareto
    front; frontier_statuses: those whose steps to target count on the frontier and in the
    critical batch size (``pruned`` too: a trial ASHA stopped after it reached the target
    measured its steps to the target; one stopped before counts as not reaching it, like an
    ok trial that never did); throughput_statuses: those whose speed counts.
    gns_points_per_trial: the noise-scale curves are thinned to about this many rows.
    price_per_hour: the price of one device (worker) hour, for the cost to the target of
    ``recommend`` (None: not priced).
    """

    n_boot: int = _default(critical_batch_size_bootstrap, "n_boot")
    seed: int = _default(critical_batch_size_bootstrap, "seed")
    ci: float = _default(steps_to_target_frontier, "ci")
    zhang_excess: float = _default(critical_batch_size, "excess")
    perfect_tol: float = _default(classify_regimes, "perfect_tol")
    plateau_tol: float = _default(classify_regimes, "plateau_tol")
    statuses: tuple[str, ...] = tuple(_default(best_per_batch_size, "statuses"))
    frontier_statuses: tuple[str, ...] = ("ok", "pruned")
    throughput_statuses: tuple[str, ...] = tuple(_default(throughput_frontier, "statuses"))
    gns_points_per_trial: int = 200
    price_per_hour: float | None = None

    def __post_init__(self) -> None:
        check_fraction(self.ci, "ci")
        for name in ("n_boot", "zhang_excess", "gns_points_per_trial"):
            check_positive(getattr(self, name), name)
        if self.price_per_hour is not None:
            check_positive(self.price_per_hour, "price_per_hour")
        for name in ("perfect_tol", "plateau_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("statuses", "frontier_statuses", "throughput_statuses"):
            unknown = [s for s in getattr(self, name) if s not in STATUSES]
            if unknown or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty tuple of {STATUSES}, "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StudyInfo:
    """What study.json says, and what it could not say (``problems``)."""

    meta: dict[str, Any]
    direction: str | None
    target: float | None
    problems: tuple[str, ...] = ()
    results_written: str | None = None  # when the trials table was last written
    targets: tuple[float, ...] = ()  # every threshold measured (the target among them)
    target_crossing: str = DEFAULT_CROSSING
    """The rule the trials table's at-target columns were measured with (``confirmed`` for a
    study.json written before the setting existed)."""
