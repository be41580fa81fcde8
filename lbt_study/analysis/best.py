"""The best trial per batch size, the generalization gap by normalization, and Pareto fronts.

Shallue et al. (2018) compare batch sizes only after tuning the other hyperparameters
separately for every batch size; ``best_per_batch_size`` is that selection. The objective's
direction is always given by the caller, never guessed from a column name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import (
    as_list,
    check_direction,
    eligible,
    floats,
    require,
    statuses_text,
)

DEFAULT_PARETO = (("final_objective", "maximize"), ("seconds_to_target", "minimize"))


def best_per_batch_size(
    trials: pd.DataFrame,
    direction: str,
    by: str | Sequence[str] = ("batch_size",),
    metric: str = "final_objective",
    statuses: Sequence[str] | None = ("ok",),
) -> pd.DataFrame:
    """The best trial of every group of ``by`` (e.g. batch size, or batch size and norm).

    Returns one row per distinct value of ``by`` in ``trials`` (whatever the status, so a
    batch size where every trial diverged still has a row), sorted by the group keys, index
    0..n-1. Columns: every column of ``trials`` holding the best trial's values, then
    ``n_candidates`` (trials that competed: status in ``statuses`` and ``metric`` not NaN)
    and ``reason`` (missing, or why the group has no best trial; its trial columns are then
    NaN). Best: highest ``metric`` for "maximize", lowest for "minimize"; a tie goes to the
    trial that appears first in ``trials``. ``statuses=None`` lets every status compete.
    """
    check_direction(direction)
    by = as_list(by)
    if not by:
        raise ValueError("best_per_batch_size: by must name at least one column, got ()")
    require(trials, [*by, metric], "best_per_batch_size")
    pool = eligible(trials, statuses, "best_per_batch_size").reset_index(drop=True)
    values = floats(pool[metric])
    pool, values = pool[values.notna()], values[values.notna()]
    grouped = values.groupby([pool[c] for c in by], dropna=False)
    picked = grouped.idxmax() if direction == "maximize" else grouped.idxmin()
    best = pool.loc[picked.to_numpy()]

    counts = trials.groupby(by, dropna=False).size().rename("n_trials").reset_index()
    found = pool.groupby(by, dropna=False).size().rename("n_candidates").reset_index()
    counts = counts.merge(found, on=by, how="left")
    counts["n_candidates"] = counts["n_candidates"].fillna(0).astype(int)
    out = counts.merge(best, on=by, how="left").sort_values(by, kind="stable")
    out = out.reset_index(drop=True)
    out["reason"] = _no_best_reason(out, metric, statuses)
    return out[[*trials.columns, "n_candidates", "reason"]]


def _no_best_reason(
    out: pd.DataFrame, metric: str, statuses: Sequence[str] | None
) -> pd.Series:
    text = (
        "none of the " + out["n_trials"].astype(str) + f" trials here has {statuses_text(statuses)}"
        f" and a {metric} value"
    )
    return text.where(out["n_candidates"] == 0, None)


def gap_by_norm(
    trials: pd.DataFrame,
    direction: str,
    gap_col: str = "final_gap_accuracy",
    metric: str = "final_objective",
    batch_col: str = "batch_size",
    norm_col: str = "norm",
    statuses: Sequence[str] | None = ("ok",),
    within: Sequence[str] = (),
) -> pd.DataFrame:
    """The generalization gap against batch size, for each normalization (and each value of
    the columns ``within``, e.g. ``("budget",)`` when a study ran several budgets).

    Returns one row per (norm, batch size) in ``trials``, sorted by both. Columns: norm,
    batch_size (named by ``norm_col``, ``batch_col``), ``trial_id`` and ``gap_of_best`` (the
    ``gap_col`` value of the best trial by ``metric`` in ``direction``, as in
    ``best_per_batch_size``), ``gap_median`` and ``n_trials`` (median and count of
    ``gap_col`` over the trials with status in ``statuses`` that have a gap value), and
    ``reason`` (missing, or why gap_of_best is NaN). Gap conventions are the results
    table's: train - validation accuracy, validation - train loss (Keskar et al. 2017;
    Hoffer et al. 2017 study how it moves with batch size and normalization).
    """
    by = [norm_col, *within, batch_col]
    best = best_per_batch_size(trials, direction, by=by, metric=metric, statuses=statuses)
    require(trials, [gap_col, "trial_id"], "gap_by_norm")
    pool = eligible(trials, statuses, "gap_by_norm")
    gaps = floats(pool[gap_col])
    stats = gaps.groupby([pool[c] for c in by], dropna=False).agg(["median", "count"])
    stats = stats.rename(columns={"median": "gap_median", "count": "n_trials"}).reset_index()
    out = best[[*by, "trial_id", "reason"]].assign(gap_of_best=floats(best[gap_col]))
    out = out.merge(stats, on=by, how="left")
    out["n_trials"] = out["n_trials"].fillna(0).astype(int)
    no_gap = out["reason"].isna() & out["gap_of_best"].isna()
    out["reason"] = out["reason"].mask(
        no_gap, "the best trial " + out["trial_id"].astype(str) + f" has no {gap_col} value"
    )
    return out[[*by, "trial_id", "gap_of_best", "gap_median", "n_trials", "reason"]]


def pareto_front(
    trials: pd.DataFrame,
    objectives: Sequence[tuple[str, str]] = DEFAULT_PARETO,
    statuses: Sequence[str] | None = ("ok",),
) -> pd.DataFrame:
    """Every trial, marked whether it lies on the Pareto front of ``objectives``.

    ``objectives`` pairs a column with its direction ("maximize"/"minimize"). A trial is
    dominated when another is at least as good in every objective and strictly better in
    one, so two trials with equal values do not dominate each other (both can be on the
    front). Only trials with status in ``statuses`` and no NaN in any objective compete.
    Returns all rows of ``trials`` with two more columns: ``on_front`` (bool) and ``reason``
    (why the trial did not compete; missing for those that did, dominated or not). Sorted:
    front first, each part best-first on the first objective, then table order.
    """
    objectives = [tuple(pair) for pair in objectives]
    if not objectives:
        raise ValueError("pareto_front: objectives must name at least one (column, direction)")
    for column, direction in objectives:
        check_direction(direction, f"pareto_front: the direction of {column!r}")
    columns = [column for column, _ in objectives]
    require(trials, columns, "pareto_front")
    trials = trials.reset_index(drop=True)
    sign = np.array([1.0 if d == "maximize" else -1.0 for _, d in objectives])
    values = np.column_stack([floats(trials[c]).to_numpy() for c in columns]) * sign
    in_status = trials.index.isin(eligible(trials, statuses, "pareto_front").index)
    missing = np.isnan(values)
    competes = in_status & ~missing.any(axis=1)
    on_front = np.zeros(len(trials), dtype=bool)
    on_front[competes] = ~_dominated(values[competes])

    reason = pd.Series(None, index=trials.index, dtype=object)
    if (~in_status).any():
        status = trials.loc[~in_status, "status"].astype(str)
        reason[~in_status] = "status " + status + f" is not one of {tuple(statuses or ())}"
    first_missing = np.asarray(columns)[missing.argmax(axis=1)]
    reason[in_status & ~competes] = [f"no {c} value" for c in first_missing[in_status & ~competes]]
    out = trials.assign(on_front=on_front, reason=reason)
    order = pd.DataFrame({"off": ~on_front, "key": -values[:, 0]})
    order = order.sort_values(["off", "key"], kind="stable").index.to_numpy()
    return out.iloc[order].reset_index(drop=True)


def _dominated(values: np.ndarray) -> np.ndarray:
    """For rows to maximize in every column: whether another row dominates each one."""
    dominated = np.zeros(len(values), dtype=bool)
    for i, row in enumerate(values):
        at_least = np.all(values >= row, axis=1)
        better = np.any(values > row, axis=1)
        dominated[i] = bool(np.any(at_least & better))
    return dominated
