"""Time to a target: steps, examples and seconds each trial needed to reach a metric value.

This is the measurement of Shallue et al. (2018), "steps to reach a target validation error"
as a function of batch size. Which evaluation counts as reaching the target is the study's
``target_crossing`` (``CROSSINGS``): ``"first"`` (the default), the first evaluation that
reaches it, as Shallue et al.'s steps to result; ``"confirmed"``, the first whose next
evaluation reaches it too (one noisy evaluation that touches the target and falls back does
not count; a trial's last evaluation needs no successor). The crossing is placed between
that evaluation and the one before it by linear interpolation of the metric in log steps
(linear in steps from step 0). Examples, seconds,
epoch and the gaps at target are interpolated linearly in steps at that point. So the
resolution is not the evaluation interval: a trial crossing between two evaluations gets a
step count between them. A step-0 evaluation that already meets (and keeps) the target counts
as 0 steps. A trial that never reaches the target gets NaN in every measured column (and
``reached=False``), never a sentinel such as -1, so means and plots skip it instead of
being pulled by it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from lbt_study.records.schema import AT_TARGET, DIRECTIONS
from lbt_study.train.config import CROSSINGS, DEFAULT_CROSSING

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




def crossing_confirm(crossing: str) -> int:
    """The evaluations in a row the rule ``crossing`` needs (a ``ValueError`` naming the
    rules for an unknown one)."""
    if crossing not in CROSSINGS:
        raise ValueError(f"target_crossing must be one of {', '.join(map(repr, CROSSINGS))}, "
                         f"got {crossing!r}")
    return CROSSINGS[crossing]


def time_to_target(
    history: pd.DataFrame, target: float, direction: str, metric: str = "objective",
    crossing: str = DEFAULT_CROSSING,
) -> pd.DataFrame:
    """One row per trial (order of first appearance in ``history``): where it reached the target.

    Columns: trial_id, reached, steps_to_target, examples_to_target, seconds_to_target
    (``train_seconds`` there: training time, evaluation excluded), epoch_to_target,
    gap_accuracy_at_target, gap_loss_at_target (interpolated at the crossing, see the
    module docstring), value_at_target (``metric`` at the evaluation that counts as reaching
    the target under the rule ``crossing``) and eval_step_at_target (that
    evaluation's step). Never reached: NaN in every measured column. A measured column
    whose source is missing from ``history`` (e.g. gap_accuracy for a regression workload)
    is all NaN. Measured columns are float64 whether or not any trial reached.
    """
    _require(history, ("trial_id", "step", "examples_seen", metric), "time_to_target")
    confirm = crossing_confirm(crossing)
    trials = _trials(history)
    code = pd.Categorical(history["trial_id"], categories=trials).codes
    scored = (code >= 0) & np.isfinite(_float_column(history, metric))  # NaN: no evaluation
    ordered = history.assign(_trial=code)[scored].sort_values(["_trial", "step"],
                                                              kind="stable")
    t = ordered["_trial"].to_numpy()
    hit = reached(ordered[metric], target, direction).to_numpy()
    value = _float_column(ordered, metric)
    at, before = _confirmed_crossings(t, hit, confirm)
    prev = np.maximum(at - 1, 0)  # the miss before the crossing, where ``before``
    step = _float_column(ordered, "step")
    s0, s1 = step[prev], step[at]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(before, (target - value[prev]) / (value[at] - value[prev]), 1.0)
        in_logs = s0 * (s1 / s0) ** f  # linear in log steps; from step 0, linear in steps
        crossing = np.where(before, np.where(s0 > 0, in_logs, s0 + f * (s1 - s0)), s1)
        w = np.where(before, (crossing - s0) / (s1 - s0), 1.0)
    found = pd.DataFrame(index=t[at])
    for name, source in AT_TARGET.items():
        col = _float_column(ordered, source)
        found[name] = col[prev] * (1 - w) + col[at] * w
    found["steps_to_target"] = crossing
    found["value_at_target"], found["eval_step_at_target"] = value[at], s1
    out = found.reindex(range(len(trials)))
    out.insert(0, "reached", out.index.isin(found.index))
    out.insert(0, "trial_id", trials)
    return out.reset_index(drop=True).astype({c: "float64" for c in found.columns})


def _confirmed_crossings(t: np.ndarray, hit: np.ndarray,
                         confirm: int) -> tuple[np.ndarray, np.ndarray]:
    """Per trial that has one (rows sorted by trial code ``t``, then step): the position of
    its first evaluation that reaches the target with the next ``confirm - 1`` evaluations
    of the trial (as many as it has), and whether there is an evaluation before it (a miss)
    to interpolate from."""
    ok = hit.copy()
    for k in range(1, confirm):
        same = np.zeros(len(t), dtype=bool)
        same[:-k] = t[k:] == t[:-k]
        ok &= ~same | np.concatenate([hit[k:], np.ones(k, dtype=bool)])
    positions = np.flatnonzero(ok)
    _, first = np.unique(t[positions], return_index=True)
    at = positions[first]
    prev = np.maximum(at - 1, 0)
    before = (at > 0) & (t[prev] == t[at]) & ~hit[prev]
    return at, before


def final_and_at_target_gap(
    history: pd.DataFrame, target: float, direction: str, metric: str = "objective",
    crossing: str = DEFAULT_CROSSING,
) -> pd.DataFrame:
    """Per trial: the generalization gap at its last evaluation and where it reached the target.

    Columns: trial_id, gap_accuracy_final, gap_loss_final (at the trial's last evaluation,
    highest step, even if the gap there is NaN), gap_accuracy_at_target, gap_loss_at_target
    (as in ``time_to_target``: NaN if never reached). Comparing the two separates a gap that
    comes from training longer from one that batch size gives at equal quality.
    """
    at_target = time_to_target(history, target, direction, metric, crossing)
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
