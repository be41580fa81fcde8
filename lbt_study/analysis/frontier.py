"""Steps (or examples, or seconds) to target against batch size: the Shallue et al. frontier.

Shallue et al. (2018), "Measuring the Effects of Data Parallelism on Neural Network
Training", tune the other hyperparameters separately for every batch size and plot, for each
batch size, the fewest steps any trial needed to reach the target validation error. This
module takes that minimum over the trials table's ``steps_to_target`` (or another
``*_to_target`` column), and says how much the minimum leans on its fastest trials with the
trial-level bootstrap that ``critical_batch_size_bootstrap`` also resamples.

Why that interval and not a confidence interval for the best-tuned steps: a minimum over n
trials says nothing about how much faster an untried configuration could be, so no interval
from a handful of trials bounds the best-tuned steps from below without a model of the search
(the percentile bootstrap of a minimum never goes below it; an m-out-of-n or smoothed
bootstrap needs many trials or a bandwidth chosen by hand). Under one-sided noise (no trial
beats the best-tuned curve) the interval never covers the best-tuned value; it covers the
frontier point a repeat study of n trials would find with probability
1/2 - C(2n - k, n) / C(2n, n) (k = upper_rank; 0.42 for n = 5, whatever the distribution;
both checked by simulation in tests/test_analysis_scaling.py). What it does say, exactly, is
how far the point rests on its luckiest trials.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import (
    as_list,
    check_direction,
    check_fraction,
    eligible,
    floats,
    require,
    statuses_text,
)


def steps_to_target_frontier(
    trials: pd.DataFrame,
    direction: str,
    metric: str = "steps_to_target",
    by: str | Sequence[str] = ("batch_size",),
    ci: float = 0.95,
    statuses: Sequence[str] | None = ("ok",),
    objective: str = "final_objective",
) -> pd.DataFrame:
    """For each batch size, the fewest ``metric`` (steps, examples or seconds) to the target.

    The point is Shallue et al.'s measurement: the minimum of ``metric`` over the trials that
    reached the target (``reached_target`` true, ``metric`` not NaN, status in ``statuses``),
    i.e. the best-tuned trial. A tie in ``metric`` goes to the better ``objective`` in
    ``direction`` (the objective's direction), then to table order.

    The interval says how much the point leans on its fastest trials (not a confidence
    interval for the best-tuned steps: see the module's docstring). It is the ``ci``
    percentile interval of the minimum when the n trials with status in ``statuses`` here
    are resampled with replacement (one never reaching the target is infinitely slow),
    computed exactly, so without a seed: the minimum is at or above the k-th fastest trial
    with probability ((n - k + 1) / n)^n. Hence:

    - NAME_lower is always the point (a resample can lose the best trial, never beat it);
    - NAME_upper is the ``upper_rank``-th fastest trial, the smallest k for which a resample
      misses the k fastest with probability at most (1 - ci) / 2: 2nd at n = 2, 3rd at
      n = 3 ... 8, 4th from n = 9 on (at ci = 0.95). It is the value the point rises to when
      its luckiest trials are missing: equal to the point when the fastest trials agree,
      far above it when one trial is much faster than the rest;
    - NAME_upper is inf (unbounded) when that rank falls on a trial that never reached the
      target: the point would vanish from too many resamples (``reason`` says how many).

    Returns one row per group of ``by`` present in ``trials`` (any status), sorted. Columns:
    the ``by`` keys, ``trial_id`` (the best trial), NAME, NAME_lower, NAME_upper (NAME is
    ``metric`` without its ``_to_target`` suffix: "steps", "examples", "seconds"),
    ``n_trials`` (trials with status in ``statuses``: the ones resampled), ``n_reached``,
    ``upper_rank`` (missing without a point), ``n_censored``, ``censored``,
    ``censored_at`` (``_censoring``) and ``reason`` (missing when nothing needs saying; a
    group where no trial reached the target has NaN values and says why).
    """
    check_direction(direction)
    by = as_list(by)
    if not by:
        raise ValueError("steps_to_target_frontier: by must name at least one column, got ()")
    check_fraction(ci, "ci")
    require(trials, [*by, metric, objective, "trial_id", "reached_target"],
            "steps_to_target_frontier")
    name = metric.removesuffix("_to_target")
    pool = eligible(trials, statuses, "steps_to_target_frontier")
    hit = pool.assign(_value=reached_values(pool, metric))
    hit = hit[np.isfinite(hit["_value"])].sort_values(
        ["_value", objective], ascending=[True, direction == "minimize"], kind="stable")
    out = _table(trials, pool, hit, by, metric, name, ci)
    out["reason"] = _frontier_reason(out, name, statuses)
    out = out.sort_values(by, kind="stable").reset_index(drop=True)
    columns = [name, f"{name}_lower", f"{name}_upper"]
    out = out.astype({**dict.fromkeys(columns, "float64"), "upper_rank": "Int64",
                      "censored_at": "float64"})
    return out[[*by, "trial_id", *columns, "n_trials", "n_reached", "upper_rank",
                "n_censored", "censored", "censored_at", "reason"]]


def _table(trials: pd.DataFrame, pool: pd.DataFrame, hit: pd.DataFrame, by: list[str],
           metric: str, name: str, ci: float) -> pd.DataFrame:
    """Per group: the counts, the best trial, the point with its interval, the censoring."""
    out = _counts(trials, pool, hit, by)
    best = hit.groupby(by, dropna=False, sort=False).head(1)[[*by, "trial_id"]]
    out = out.merge(best, on=by, how="left")
    out = out.merge(_intervals(trials, pool, by, metric, name, ci), on=by, how="left")
    out = out.merge(_censoring(pool, by, metric), on=by, how="left")
    out["n_censored"] = out["n_censored"].fillna(0).astype(int)
    out["censored"] = (out["n_reached"] == 0) & (out["n_censored"] > 0)
    return out


BUDGET_OF = {"steps_to_target": "steps", "examples_to_target": "examples_seen",
             "seconds_to_target": "train_seconds"}
"""The trials-table column that says how far a trial got, for each at-target metric."""


def _censoring(pool: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Per group: n_censored, the trials that ended ok without reaching the target (their
    budget ran out first: they would have needed more), and censored_at, the most of the
    metric any of them had (steps, examples or seconds trained). A group none of whose
    trials reached the target while some ran out of budget is ``censored``: its point lies
    above censored_at. (A budget that censors only trials slower than the fastest leaves
    the minimum exact: they would have needed more than it.)"""
    spent = BUDGET_OF.get(metric)
    ran_out = pool["status"].eq("ok") & ~pool["reached_target"].eq(True)
    values = floats(pool[spent]) if spent in pool.columns else pd.Series(np.nan, pool.index)
    out = pool.assign(_out=ran_out, _spent=values.where(ran_out))
    groups = out.groupby(by, dropna=False)
    return pd.DataFrame({"n_censored": groups["_out"].sum(),
                         "censored_at": groups["_spent"].max()}).reset_index()


def reached_values(pool: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of each trial as float, +inf for one that did not reach the target."""
    value = floats(pool[metric])
    return value.where(pool["reached_target"].eq(True) & value.notna(), np.inf)


def trial_groups(pool: pd.DataFrame, metric: str, by: list[str]) -> dict[tuple, np.ndarray]:
    """Per group of ``by``: ``reached_values`` of its trials, sorted (inf = not reached)."""
    values = pool.assign(_value=reached_values(pool, metric))
    return {key if isinstance(key, tuple) else (key,): np.sort(part["_value"].to_numpy())
            for key, part in values.groupby(by, dropna=False, sort=True)}


def resampled_minima(groups: Sequence[np.ndarray], n_boot: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(n_boot, groups): each group's minimum over a resample with replacement of its
    values, groups drawn in order from ``rng``; inf for an empty group."""
    columns = [values[rng.integers(0, len(values), (n_boot, len(values)))].min(axis=1)
               if len(values) else np.full(n_boot, np.inf) for values in groups]
    return np.column_stack(columns) if columns else np.empty((n_boot, 0))


def min_interval(values: np.ndarray, ci: float) -> tuple[float, float, int]:
    """The exact percentile interval of the bootstrap minimum of ``values`` (sorted, not
    empty) and the rank of the value at its upper end: P(min <= v_k) = 1 - ((n - k) / n)^n."""
    n = len(values)
    cdf = 1 - ((n - np.arange(1, n + 1)) / n) ** n
    tail = (1 - ci) / 2
    low, high = int(np.argmax(cdf >= tail)), int(np.argmax(cdf >= 1 - tail))
    return float(values[low]), float(values[high]), high + 1


def _intervals(trials: pd.DataFrame, pool: pd.DataFrame, by: list[str], metric: str,
               name: str, ci: float) -> pd.DataFrame:
    """Per group with a reaching trial: the point, its interval and the upper bound's rank."""
    rows = [(*key, *min_interval(values, ci))
            for key, values in trial_groups(pool, metric, by).items() if np.isfinite(values[0])]
    frame = pd.DataFrame(rows, columns=[*by, f"{name}_lower", f"{name}_upper", "upper_rank"])
    frame = frame.astype({c: trials[c].dtype for c in by})  # an empty frame is all object
    frame.insert(len(by), name, frame[f"{name}_lower"])
    return frame


def _counts(trials: pd.DataFrame, pool: pd.DataFrame, hit: pd.DataFrame,
            by: list[str]) -> pd.DataFrame:
    """Per group of ``by`` in ``trials``: _all (any status), n_trials (in ``pool``), n_reached."""
    counts = trials.groupby(by, dropna=False).size().rename("_all").reset_index()
    for frame, column in ((pool, "n_trials"), (hit, "n_reached")):
        sizes = frame.groupby(by, dropna=False).size().rename(column).reset_index()
        counts = counts.merge(sizes, on=by, how="left")
    counts[["n_trials", "n_reached"]] = counts[["n_trials", "n_reached"]].fillna(0).astype(int)
    return counts


def _frontier_reason(out: pd.DataFrame, name: str,
                     statuses: Sequence[str] | None) -> pd.Series:
    n, r = out["n_trials"], out["n_reached"]
    missed = ((n - r) / n.where(n > 0)) ** n
    at = out["censored_at"].map(lambda v: f" (the most {name} any had: {v:,.0f})"
                                if np.isfinite(v) else "")
    conditions = [n == 0, out["censored"], r == 0, n == 1,
                  np.isinf(out[f"{name}_upper"].astype(float))]
    texts = [
        f"no trial with {statuses_text(statuses)} (of " + out["_all"].astype(str) + " here)",
        "censored: none of the " + n.astype(str) + " trials reached the target within its "
        "budget" + at + f", so its {name} to target exceed it: no frontier point (raise the "
        "budget)",
        "none of the " + n.astype(str) + f" trials with {statuses_text(statuses)} reached the"
        " target",
        pd.Series("one trial: the interval collapses to the point (nothing to resample)",
                  index=out.index),
        r.astype(str) + " of " + n.astype(str) + " trials reached the target: a resample has"
        " none of them with probability " + missed.map(lambda p: f"{p:.0%}").astype(str)
        + f", so {name}_upper is unbounded",
    ]
    reason = pd.Series(None, index=out.index, dtype=object)
    for condition, text in reversed(list(zip(conditions, texts, strict=True))):
        reason = reason.mask(condition, text)
    return reason
