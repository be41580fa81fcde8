"""The critical batch size as a function of the target (McCandlish et al. 2018 and Zhang et
al. 2024 both find it grows as the target gets harder).

For each threshold the history is measured afresh with ``time_to_target`` (the crossing
interpolated between evaluations), the steps-to-target frontier is taken over the trials
(the fewest steps per batch size) and the critical batch size fitted to it with its
trial-level bootstrap interval, exactly as the report does for the study's own target.

Whether B_crit moves with the target is a paired comparison: ``b_crit_ratio`` is each
target's B_crit over the easiest target's (the lowest for "maximize", the highest for
"minimize"), and its interval comes from resampling the trials once per draw and measuring
every target on those same trials (``paired.paired_refits``), so the noise common to both
targets cancels. A ratio whose interval holds 1 shows no change with the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import check_direction, require
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.paired import paired_refits, ratio_interval
from lbt_study.analysis.scaling import critical_batch_size_bootstrap
from lbt_study.records.schema import TRIALS_AT_TARGET
from lbt_study.records.targets import time_to_target
from lbt_study.train.config import CROSSINGS, DEFAULT_CROSSING

COLUMNS = ("target", "n_batch_sizes", "n_reached", "b_crit", "lower", "upper", "s_min",
           "e_min", "b_crit_zhang", "b_crit_ratio", "ratio_lower", "ratio_upper", "reason")


def trials_at(trials: pd.DataFrame, history: pd.DataFrame, target: float,
              direction: str, crossing: str = DEFAULT_CROSSING) -> pd.DataFrame:
    """``trials`` with reached_target and the trials table's at-target columns
    (``TRIALS_AT_TARGET``) measured at ``target`` from the history, under the rule
    ``crossing``."""
    found = time_to_target(history, target, direction, crossing=crossing).rename(
        columns={"reached": "reached_target"})
    measured = ["reached_target", *TRIALS_AT_TARGET]
    out = trials.drop(columns=[c for c in measured if c in trials.columns])
    out = out.merge(found[["trial_id", *measured]], on="trial_id", how="left")
    out["reached_target"] = out["reached_target"].fillna(False).astype(bool)
    return out


def critical_by_target(trials: pd.DataFrame, history: pd.DataFrame, targets: Sequence[float],
                       direction: str, statuses: Sequence[str] | None = ("ok",),
                       ci: float = 0.95, excess: float = 0.2, n_boot: int = 1000,
                       seed: int = 0, crossing: str = DEFAULT_CROSSING) -> pd.DataFrame:
    """One row per target (in the order given): batch sizes on the frontier, how many
    trials reached it, the McCandlish B_crit with its trial-level bootstrap interval
    (``critical_batch_size_bootstrap``), S_min, E_min, Zhang et al.'s 20% estimate,
    ``b_crit_ratio`` (B_crit over the easiest target's; 1 there) with its paired ``ci``
    interval ``ratio_lower`` .. ``ratio_upper`` (``n_boot`` paired resamples, NaN at the
    easiest target), and the reason a value is missing or needs a word (the fit's, else the
    rule's, then the share of paired resamples without a ratio)."""
    check_direction(direction)
    require(trials, ["trial_id", "batch_size", "final_objective"], "critical_by_target")
    measured = [trials_at(trials, history, target, direction, crossing) for target in targets]
    rows = [{"target": float(target),
             **critical_at(trials, history, target, direction, crossing, statuses, ci, excess,
                           n_boot, seed, at=at)} for target, at in zip(targets, measured,
                                                                     strict=True)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(targets) < 2:
        return table
    easiest = int(np.argmin(targets) if direction == "maximize" else np.argmax(targets))
    draws = paired_refits(measured, statuses, n_boot, seed, ci)
    for j in range(len(targets)):
        table.loc[j, "b_crit_ratio"] = table.loc[j, "b_crit"] / table.loc[easiest, "b_crit"]
        if j == easiest:
            continue
        lower, upper, undefined = ratio_interval(draws[j], draws[easiest], ci)
        table.loc[j, ["ratio_lower", "ratio_upper"]] = lower, upper
        if undefined > 0:
            note = (f"{undefined:.0%} of paired resamples had no ratio (a refit without an "
                    "answer at either target), counted against both ends")
            reason = table.loc[j, "reason"]
            table.loc[j, "reason"] = f"{reason}; {note}" if isinstance(reason, str) else note
    return table


CROSSING_COLUMNS = ("target_crossing", "n_batch_sizes", "n_reached", "b_crit", "lower",
                    "upper", "reason")


def critical_by_crossing(trials: pd.DataFrame, history: pd.DataFrame, target: float,
                         direction: str, statuses: Sequence[str] | None = ("ok",),
                         ci: float = 0.95, excess: float = 0.2, n_boot: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """One row per target-crossing rule (``CROSSINGS``: first, confirmed): the history
    measured again at ``target`` under that rule, and the McCandlish B_crit of the same
    trials with its trial-level bootstrap interval (the same resamples under both rules:
    one seed)."""
    check_direction(direction)
    require(trials, ["trial_id", "batch_size", "final_objective"], "critical_by_crossing")
    rows = []
    for rule in CROSSINGS:
        found = critical_at(trials, history, target, direction, rule, statuses, ci, excess,
                            n_boot, seed)
        rows.append({"target_crossing": rule, **found, "reason": found["fit_reason"]})
    return pd.DataFrame(rows)[list(CROSSING_COLUMNS)]


def crossings_disagree(table: pd.DataFrame) -> bool:
    """Whether the rules' B_crit intervals (``critical_by_crossing``) do not overlap."""
    finite = table.dropna(subset=["lower", "upper"])
    if len(finite) < 2:
        return False
    return bool(finite["lower"].max() > finite["upper"].min())


def critical_at(trials: pd.DataFrame, history: pd.DataFrame, target: float, direction: str,
                crossing: str, statuses: Sequence[str] | None, ci: float, excess: float,
                n_boot: int, seed: int, at: pd.DataFrame | None = None) -> dict:
    """The frontier and B_crit at ``target`` under ``crossing``, measured from the history
    (``at``: that measurement, ``trials_at``, when already taken)."""
    if at is None:
        at = trials_at(trials, history, target, direction, crossing)
    frontier = steps_to_target_frontier(at, direction, statuses=statuses, ci=ci)
    cbs = critical_batch_size_bootstrap(at, direction, n_boot=n_boot, seed=seed, ci=ci,
                                        excess=excess, statuses=statuses, frontier=frontier)
    return {"n_batch_sizes": int(frontier["steps"].notna().sum()),
            "n_reached": int(frontier["n_reached"].sum()), "b_crit": cbs.b_crit_fit,
            "lower": cbs.b_crit_fit_lower, "upper": cbs.b_crit_fit_upper,
            "s_min": cbs.s_min, "e_min": cbs.e_min, "b_crit_zhang": cbs.b_crit_zhang,
            "reason": cbs.fit_reason or cbs.zhang_reason, "fit_reason": cbs.fit_reason}
