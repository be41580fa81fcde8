"""The critical batch size of one study: every estimate of the steps frontier beside the
measured noise scale (``critical_estimates``), and B_crit at each of the study's targets
(``critical_vs_target``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from lbt_study.analysis._checks import missing_columns
from lbt_study.analysis.by_target import critical_by_crossing, critical_by_target
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.noise_scale import gns_against_b_crit, median_gns
from lbt_study.analysis.outcome import Outcome, attempt, guard
from lbt_study.analysis.scaling import (
    CriticalBatchSize,
    critical_batch_size,
    critical_batch_size_bootstrap,
)
from lbt_study.analysis.settings import AnalysisSettings, StudyInfo

ESTIMATE_COLUMNS = ("method", "b_crit", "lower", "upper", "ratio_to_b_crit", "s_min", "e_min",
                    "reason")


@dataclass(frozen=True, eq=False)
class CriticalEstimates:
    """The critical batch size of the steps frontier, every way it is estimated.

    cbs: the ``CriticalBatchSize`` (fit, its interval, Zhang et al.'s rule, the noise scale,
    the frontier points). table: one row per method of ``CriticalBatchSize.estimates``
    (``ESTIMATE_COLUMNS``: its interval, ratio_to_b_crit, S_min and E_min of the fits, and
    why a value is missing or needs a word). gns_how: how the noise scale set beside B_crit
    was found (None when none was: the gns_simple row's reason says why). gns_ratio: the
    frontier trials' noise scale at the crossing and averaged up to it, each beside B_crit
    with intervals (``noise_scale.gns_against_b_crit``; no rows without a fitted B_crit).
    """

    cbs: CriticalBatchSize
    table: pd.DataFrame
    gns_how: str | None
    gns_ratio: pd.DataFrame = field(default_factory=pd.DataFrame)


def critical_estimates(steps: Outcome[pd.DataFrame], gns: Outcome[pd.DataFrame],
                       settings: AnalysisSettings, trials: pd.DataFrame | None = None,
                       direction: str | None = None) -> Outcome[CriticalEstimates]:
    """The critical batch size of the steps frontier ``steps`` (and the measured noise scale).

    With ``trials`` and ``direction``: ``critical_batch_size_bootstrap`` of the trials
    (B_crit's interval from refits to trial-level bootstrap resamples; the covariance
    interval a row of its own) on the frontier ``steps`` already holds; without them, or
    without a frontier, ``critical_batch_size`` of the frontier alone.
    """
    median, gns_words = median_gns(gns, steps, trials)
    s = settings
    if steps.reason or trials is None or direction is None:
        frontier = steps.value if not steps.reason else pd.DataFrame(
            {"batch_size": pd.Series(dtype=float), "steps": pd.Series(dtype=float)})
        result = attempt("the critical batch size", critical_batch_size, frontier, gns=median,
                         ci=s.ci, excess=s.zhang_excess)
    else:
        result = attempt("the critical batch size", critical_batch_size_bootstrap, trials,
                         direction, n_boot=s.n_boot, seed=s.seed, ci=s.ci,
                         excess=s.zhang_excess, gns=median, statuses=s.frontier_statuses,
                         frontier=steps.value)
    if result.reason:
        return Outcome(reason=result.reason)
    cbs = result.value
    table = cbs.estimates()
    table["reason"] = table["reason"].astype(object)
    if steps.reason:
        table.loc[table["method"] != "gns_simple", "reason"] = steps.reason
    table.loc[table["method"] == "gns_simple", "reason"] = gns_words if median is None else None
    fitted = table["method"].str.startswith("mccandlish")
    table["s_min"] = fitted.map({True: cbs.s_min, False: math.nan})
    table["e_min"] = fitted.map({True: cbs.e_min, False: math.nan})
    ratio = pd.DataFrame()
    if trials is not None and math.isfinite(cbs.b_crit_fit) and cbs.b_crit_fit > 0:
        draws = cbs.bootstrap.samples if cbs.bootstrap is not None else None
        ratio = gns_against_b_crit(steps, trials, cbs.b_crit_fit, draws, s.ci, s.seed)
    return Outcome(CriticalEstimates(cbs, table[list(ESTIMATE_COLUMNS)],
                                     gns_words if median is not None else None, ratio))


def _remeasure_reason(trials: pd.DataFrame, history: pd.DataFrame,
                      study: StudyInfo) -> str | None:
    """Why the history cannot be measured again at another target or crossing rule."""
    reason = guard(trials, study, ("batch_size", "trial_id", "final_objective"), True)
    return reason or missing_columns(history, ("trial_id", "step", "examples_seen",
                                               "objective"), "history")


def critical_vs_target(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
                       settings: AnalysisSettings) -> Outcome[pd.DataFrame]:
    """``critical_by_target`` over the study's targets, from the history; an empty table
    when the study has one target (the critical table is then the whole answer)."""
    if len(study.targets) < 2:
        return Outcome(pd.DataFrame())
    reason = _remeasure_reason(trials, history, study)
    if reason:
        return Outcome(reason=reason)
    return attempt("the critical batch size by target", critical_by_target, trials, history,
                   study.targets, study.direction, statuses=settings.frontier_statuses,
                   ci=settings.ci, excess=settings.zhang_excess, n_boot=settings.n_boot,
                   seed=settings.seed, crossing=study.target_crossing)


def critical_vs_crossing(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
                         settings: AnalysisSettings) -> Outcome[pd.DataFrame]:
    """``critical_by_crossing`` at the study's target: B_crit under each crossing rule."""
    reason = _remeasure_reason(trials, history, study)
    if reason:
        return Outcome(reason=reason)
    return attempt("the critical batch size by crossing rule", critical_by_crossing, trials,
                   history, study.target, study.direction,
                   statuses=settings.frontier_statuses, ci=settings.ci,
                   excess=settings.zhang_excess, n_boot=settings.n_boot, seed=settings.seed)


NORM_COLUMNS = ("norm", "n_batch_sizes", "censored", "b_crit", "lower", "upper", "s_min",
                "e_min", "reason")


def critical_per_norm(trials: pd.DataFrame, study: StudyInfo,
                      settings: AnalysisSettings) -> Outcome[pd.DataFrame]:
    """One row per normalization of a study with several: the McCandlish B_crit of that
    norm's own frontier (its trials alone, the fastest per batch size) with the trial-level
    bootstrap interval (``critical_batch_size_bootstrap``), S_min, E_min, the batch sizes on
    its frontier and the censored ones; an empty table with one normalization."""
    if "norm" not in trials.columns or trials["norm"].nunique() < 2:
        return Outcome(pd.DataFrame(columns=list(NORM_COLUMNS)))
    reason = guard(trials, study, ("batch_size", "trial_id", "final_objective",
                                   "reached_target", "steps_to_target"), True)
    if reason:
        return Outcome(reason=reason)
    rows = [_norm_row(norm, part, study, settings)
            for norm, part in trials.groupby("norm", sort=True)]
    return Outcome(pd.DataFrame(rows, columns=list(NORM_COLUMNS)))


def _norm_row(norm: str, trials: pd.DataFrame, study: StudyInfo,
              s: AnalysisSettings) -> dict:
    frontier = attempt(f"the steps frontier of norm {norm}", steps_to_target_frontier, trials,
                       study.direction, ci=s.ci, statuses=s.frontier_statuses)
    if frontier.reason:
        return {"norm": norm, "reason": frontier.reason}
    found = attempt(f"the critical batch size of norm {norm}", critical_batch_size_bootstrap,
                    trials, study.direction, n_boot=s.n_boot, seed=s.seed, ci=s.ci,
                    excess=s.zhang_excess, statuses=s.frontier_statuses,
                    frontier=frontier.value)
    if found.reason:
        return {"norm": norm, "reason": found.reason}
    cbs, points = found.value, frontier.value
    censored = points.loc[points["censored"], "batch_size"]
    return {"norm": norm, "n_batch_sizes": int(points["steps"].notna().sum()),
            "censored": ", ".join(f"{b:g}" for b in censored) or None,
            "b_crit": cbs.b_crit_fit, "lower": cbs.b_crit_fit_lower,
            "upper": cbs.b_crit_fit_upper, "s_min": cbs.s_min, "e_min": cbs.e_min,
            "reason": cbs.fit_reason}
