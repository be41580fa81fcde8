"""The gradient noise scale of a study: the measured values of the best trials, the one set
beside the critical batch size, and the curves over training to draw.

McCandlish et al. (2018): the simple noise scale B_simple = tr(Sigma) / |G|^2 predicts the
critical batch size. Each function takes an ``Outcome`` of an earlier analysis (the best
trial per batch size, the steps frontier) and passes its reason on when it has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import missing_columns
from lbt_study.analysis.best import best_per_batch_size
from lbt_study.analysis.outcome import Outcome, attempt
from lbt_study.analysis.paired import ratio_interval
from lbt_study.analysis.settings import AnalysisSettings

GNS_COLUMNS = ("gns_at_target", "final_gns_probe", "final_gns_simple")
"""The trials table's noise-scale columns, shown per batch size beside the frontier."""


def gns_of_best(best: Outcome[pd.DataFrame]) -> Outcome[pd.DataFrame]:
    """The noise-scale columns (``GNS_COLUMNS`` present) of the best trial (by final
    objective) at each batch size."""
    if best.reason:
        return best
    frame = best.value
    present = [c for c in GNS_COLUMNS if c in frame.columns]
    if not present:
        return Outcome(reason=missing_columns(frame, GNS_COLUMNS[1:], "trials"))
    rows = frame[frame["n_candidates"] > 0][["batch_size", "trial_id", *present]]
    return Outcome(rows.reset_index(drop=True))


def median_gns(gns: Outcome[pd.DataFrame], steps: Outcome[pd.DataFrame] | None = None,
               trials: pd.DataFrame | None = None) -> tuple[float | None, str]:
    """The noise scale set beside B_crit, and the words for it: the median gns_at_target of
    the steps frontier's trials (the fastest per batch size; ``steps``) when ``trials`` has
    that column with a value for one of them; else the median final_gns_simple of the best
    trial by final objective per batch size (``gns``, from ``gns_of_best``)."""
    at_target = _median_gns_at_target(steps, trials)
    if at_target is not None:
        return at_target
    if gns.reason:
        return None, gns.reason
    if "final_gns_simple" not in gns.value:
        return None, "the trials table has no gns_at_target or final_gns_simple values"
    values = pd.to_numeric(gns.value["final_gns_simple"]).dropna()
    if values.empty:
        return None, ("no best trial has a final_gns_simple value (it is measured only with "
                      "more than one worker or with accumulation steps)")
    return float(values.median()), (f"median final_gns_simple of the best trial at "
                                    f"{len(values)} of {len(gns.value)} batch sizes")


def _median_gns_at_target(steps: Outcome[pd.DataFrame] | None,
                          trials: pd.DataFrame | None) -> tuple[float, str] | None:
    """The median gns_at_target of the frontier's trials and its words (None: no value)."""
    if steps is None or steps.reason or trials is None or "gns_at_target" not in trials:
        return None
    ids = steps.value["trial_id"].dropna()
    chosen = trials[trials["trial_id"].isin(ids)]
    values = pd.to_numeric(chosen["gns_at_target"]).dropna()
    if values.empty:
        return None
    return float(values.median()), (f"median gns_at_target of the fastest trial at "
                                    f"{len(values)} of {len(ids)} batch sizes")


GNS_MEASURES = {"at_crossing": "gns_at_target", "mean_to_crossing": "gns_mean_to_target"}
"""The two readings of the probe set beside B_crit, and the trials table's column of each:
the probe at the evaluation where the trial crosses the target, and its mean over every
probed evaluation up to and including that one (step 0 among them only under
``gns_probe_schedule="evaluation"``)."""
GNS_RATIO_COLUMNS = ("measure", "column", "n_trials", "gns", "gns_lower", "gns_upper",
                     "b_crit", "ratio", "ratio_lower", "ratio_upper", "ratio_min",
                     "ratio_max", "reason")


def gns_against_b_crit(steps: Outcome[pd.DataFrame], trials: pd.DataFrame,
                       b_crit: float, b_crit_draws: np.ndarray | None, ci: float,
                       seed: int = 0) -> pd.DataFrame:
    """B_simple of the steps frontier's trials (the fastest per batch size) beside B_crit,
    one row per reading (``GNS_MEASURES``): ``gns`` the median over those trials with the
    ``ci`` percentile interval of the median over resamples of them (as many resamples as
    ``b_crit_draws``, ``numpy.random.default_rng(seed)``); ``ratio`` = gns / b_crit with the
    interval of (resampled median) / (B_crit draw), draw by draw: the noise scale's resample
    is independent of B_crit's (``b_crit_draws``, the trial bootstrap's refits), so the
    interval carries both; ``ratio_min`` .. ``ratio_max`` the single trials' gns / b_crit.
    A reading no frontier trial has is NaN with its reason."""
    rows = []
    ids = steps.value["trial_id"].dropna() if not steps.reason else pd.Series(dtype=object)
    chosen = trials[trials["trial_id"].isin(ids)] if "trial_id" in trials else trials.iloc[:0]
    for measure, column in GNS_MEASURES.items():
        row = dict.fromkeys(GNS_RATIO_COLUMNS, math.nan) | {
            "measure": measure, "column": column, "b_crit": b_crit, "reason": None}
        values = (pd.to_numeric(chosen[column]).dropna().to_numpy(float) if column in chosen
                  else np.empty(0))
        row["n_trials"] = len(values)
        if steps.reason or not len(values):
            rows.append({**row, "reason": steps.reason or f"no frontier trial has a {column}"})
            continue
        row.update(gns=float(np.median(values)), ratio=float(np.median(values)) / b_crit,
                   ratio_min=float(values.min()) / b_crit, ratio_max=float(values.max()) / b_crit)
        if b_crit_draws is None or not len(b_crit_draws):
            rows.append({**row, "reason": "B_crit has no bootstrap draws: no intervals"})
            continue
        rng = np.random.default_rng(seed)
        medians = np.median(values[rng.integers(0, len(values), (len(b_crit_draws),
                                                                 len(values)))], axis=1)
        tail = (1 - ci) / 2
        row["gns_lower"], row["gns_upper"] = np.quantile(medians, [tail, 1 - tail],
                                                         method="inverted_cdf")
        lower, upper, undefined = ratio_interval(medians, b_crit_draws, ci)
        row.update(ratio_lower=lower, ratio_upper=upper, reason=(
            f"{undefined:.0%} of B_crit's draws had no value, counted against both ends"
            if undefined else None))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(GNS_RATIO_COLUMNS))


@dataclass(frozen=True, eq=False)
class GnsCurves:
    """The noise scale over training, to draw.

    rows: history rows (trial_id, batch_size, examples_seen, gns_simple), thinned, by batch
    size and examples; one trial per batch size. source: the history column the values come
    from ("gns_probe" or "gns_simple"). fallback: none of the best trials (by final
    objective) measured it, so these are the best at each batch size among the trials that
    did.
    """

    rows: pd.DataFrame
    source: str
    fallback: bool


NO_GNS_VALUES = ("the history has no gns_simple values (the noise scale needs more than one "
                 "worker or accumulation steps)")


def gns_curves(best: Outcome[pd.DataFrame], history: pd.DataFrame, trials: pd.DataFrame,
               direction: str | None,
               settings: AnalysisSettings | None = None) -> Outcome[GnsCurves]:
    """The history's noise scale of the best trial per B (``GnsCurves``); when none of them
    measured it, of the best per B among the trials that did. Each trial's rows are thinned
    to about ``settings.gns_points_per_trial``."""
    s = settings if settings is not None else AnalysisSettings()
    if best.reason:
        return best
    reason = missing_columns(history, ("trial_id", "examples_seen", "gns_simple"), "history")
    if reason:
        return Outcome(reason=reason)
    source = _gns_source(history)
    history = history.assign(gns_simple=pd.to_numeric(history[source]))
    rows = _gns_rows(best.value, history)
    fallback = rows.empty
    if fallback:
        measured = history.loc[pd.to_numeric(history["gns_simple"]).notna(), "trial_id"]
        subset = trials[trials["trial_id"].isin(measured)]
        chosen = attempt("best measuring trial", best_per_batch_size, subset, direction,
                         statuses=s.statuses)
        rows = pd.DataFrame() if chosen.reason or subset.empty else _gns_rows(
            chosen.value, history)
    if rows.empty:
        return Outcome(reason=NO_GNS_VALUES)
    position = rows.groupby("trial_id").cumcount()
    size = rows.groupby("trial_id")["trial_id"].transform("size")
    every = size // s.gns_points_per_trial + 1
    return Outcome(GnsCurves(rows[position % every == 0].reset_index(drop=True), source,
                             fallback))


def _gns_source(history: pd.DataFrame) -> str:
    """gns_probe (measured at every evaluation of every trial) where the history has it,
    else gns_simple (the DDP / accumulation estimator)."""
    if "gns_probe" in history and pd.to_numeric(history["gns_probe"]).notna().any():
        return "gns_probe"
    return "gns_simple"


def _gns_rows(best: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The history's finite gns_simple rows of the trials in ``best``, by B and examples."""
    chosen = best[best["n_candidates"] > 0][["trial_id", "batch_size"]]
    rows = history[["trial_id", "examples_seen", "gns_simple"]].merge(chosen, on="trial_id")
    rows = rows.assign(gns_simple=pd.to_numeric(rows["gns_simple"]))
    return rows[rows["gns_simple"].notna()].sort_values(["batch_size", "examples_seen"],
                                                        kind="stable")
