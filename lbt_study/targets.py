"""Time to a target: steps, examples and seconds each trial needed to reach a metric value.

This is the measurement of Shallue et al. (2018), "steps to reach a target validation error"
as a function of batch size. It is taken at the FIRST evaluation whose metric reaches the
target, so its resolution is the evaluation interval: a trial that crossed the target between
two evaluations is counted at the later one. Nothing is interpolated between evaluations.
A trial that never reaches the target gets NaN in every measured column (and
``reached=False``), never a sentinel such as -1, so means and plots skip it instead of
being pulled by it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from lbt_study.schema import AT_TARGET, DIRECTIONS

_GAPS = ("gap_accuracy", "gap_loss")


def reached(values: pd.Series, target: float, direction: str) -> pd.Series:
    """Boolean Series, same index: whether each value meets ``target`` in ``direction``.

    ``value >= target`` for "maximize", ``value <= target`` for "minimize". A missing value
    (NaN/NA) is never reached, so an evaluation that produced no number cannot count.
    """
    if direction == "maximize":
        hit = values >= target
    elif direction == "minimize":
        hit = values <= target
    else:
        raise ValueError(
            f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, not {direction!r}"
        )
    # Nullable dtypes give NA for a missing value: it is not reached.
    return hit.fillna(False).astype(bool)


def time_to_target(
    history: pd.DataFrame, target: float, direction: str, metric: str = "objective"
) -> pd.DataFrame:
    """One row per trial (order of first appearance in ``history``): where it reached the target.

    Columns: trial_id, reached, steps_to_target, examples_to_target, seconds_to_target
    (``train_seconds`` there: training time, evaluation excluded), epoch_to_target,
    gap_accuracy_at_target, gap_loss_at_target, value_at_target (``metric`` there), all taken
    at the first evaluation (lowest step) whose ``metric`` reaches ``target``. The resolution is
    the evaluation interval; no interpolation. A step-0 evaluation that already meets the
    target counts (steps_to_target 0). Never reached: NaN in every measured column. A measured
    column whose source is missing from ``history`` (e.g. gap_accuracy for a regression
    workload) is all NaN. Measured columns are float64 whether or not any trial reached.
    """
    _require(history, ("trial_id", "step", "examples_seen", metric), "time_to_target")
    trials = _trials(history)
    hit = reached(history[metric], target, direction)
    first = _one_row_per_trial(history.loc[hit], trials, last=False)

    out = pd.DataFrame({"trial_id": trials, "reached": trials.isin(history.loc[hit, "trial_id"])})
    for name, source in {**AT_TARGET, "value_at_target": metric}.items():
        out[name] = _float_column(first, source)
    return out.reset_index(drop=True)


def final_and_at_target_gap(
    history: pd.DataFrame, target: float, direction: str, metric: str = "objective"
) -> pd.DataFrame:
    """Per trial: the generalization gap at its last evaluation and where it reached the target.

    Columns: trial_id, gap_accuracy_final, gap_loss_final (at the trial's last evaluation,
    highest step, even if the gap there is NaN), gap_accuracy_at_target, gap_loss_at_target
    (as in ``time_to_target``: NaN if never reached). Comparing the two separates a gap that
    comes from training longer from one that batch size gives at equal quality.
    """
    at_target = time_to_target(history, target, direction, metric)
    trials = pd.Index(at_target["trial_id"])
    last = _one_row_per_trial(history, trials, last=True)
    out = pd.DataFrame({"trial_id": trials})
    for gap in _GAPS:
        out[f"{gap}_final"] = _float_column(last, gap)
    for gap in _GAPS:
        out[f"{gap}_at_target"] = at_target[f"{gap}_at_target"].to_numpy()
    return out.reset_index(drop=True)


def _require(history: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    for name in columns:
        if name not in history.columns:
            present = ", ".join(map(str, history.columns)) or "(none)"
            raise ValueError(
                f"{what}: the history table has no column {name!r}; columns present: {present}"
            )


def _trials(history: pd.DataFrame) -> pd.Index:
    """The trial ids, each once, in order of first appearance."""
    return pd.Index(history["trial_id"].dropna().drop_duplicates(), name="trial_id")


def _one_row_per_trial(rows: pd.DataFrame, trials: pd.Index, last: bool) -> pd.DataFrame:
    """The lowest-step (or highest-step) row of each trial, indexed by ``trials``.

    A stable sort on step keeps table order among equal steps, so the answer is deterministic
    and does not rely on the rows being stored in step order. Trials without rows get NaN.
    """
    ordered = rows.sort_values("step", kind="stable", na_position="first" if last else "last")
    groups = ordered.groupby("trial_id", sort=False)
    picked = groups.tail(1) if last else groups.head(1)
    return picked.set_index("trial_id").reindex(trials)


def _float_column(rows: pd.DataFrame, source: str) -> np.ndarray:
    if source not in rows.columns:
        return np.full(len(rows), np.nan)
    return rows[source].astype("float64").to_numpy()
