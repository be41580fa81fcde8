"""Steps (or examples, or seconds) to target against batch size: the Shallue et al. frontier.

Shallue et al. (2018), "Measuring the Effects of Data Parallelism on Neural Network
Training", tune the other hyperparameters separately for every batch size and plot, for each
batch size, the fewest steps any trial needed to reach the target validation error. This
module takes that minimum over the trials table's ``steps_to_target`` (or another
``*_to_target`` column) and adds a bootstrap interval over the best few trials, which says how
much the minimum leans on one lucky trial.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lbt_study.analysis._checks import (
    as_list,
    check_direction,
    check_fraction,
    check_positive,
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
    top_k: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    statuses: Sequence[str] | None = ("ok",),
    objective: str = "final_objective",
) -> pd.DataFrame:
    """For each batch size, the fewest ``metric`` (steps, examples or seconds) to the target.

    The point is Shallue et al.'s measurement: the minimum of ``metric`` over the trials that
    reached the target (``reached_target`` true, ``metric`` not NaN, status in ``statuses``),
    i.e. the best-tuned trial. A tie in ``metric`` goes to the better ``objective`` in
    ``direction`` (the objective's direction), then to table order.

    The interval: the ``top_k`` reaching trials with the smallest ``metric`` are resampled
    with replacement ``n_boot`` times (``scipy.stats.bootstrap``, percentile method, level
    ``ci``) and the minimum taken each time. Each group uses a fresh
    ``numpy.random.default_rng(seed)``, so its interval depends only on its own trials and
    the seed. With one reaching trial the interval collapses to the point (``reason`` says so).

    Returns one row per group of ``by`` present in ``trials`` (any status), sorted. Columns:
    the ``by`` keys, ``trial_id`` (the best trial), NAME, NAME_lower, NAME_upper (NAME is
    ``metric`` without its ``_to_target`` suffix: "steps", "examples", "seconds"),
    ``n_trials`` (trials with status in ``statuses``), ``n_reached``, ``n_pool`` (trials in
    the bootstrap: min(top_k, n_reached)) and ``reason`` (missing when nothing needs saying;
    a group where no trial reached the target has NaN values and says so).
    """
    check_direction(direction)
    by = as_list(by)
    if not by:
        raise ValueError("steps_to_target_frontier: by must name at least one column, got ()")
    check_positive(top_k, "top_k")
    check_positive(n_boot, "n_boot")
    check_fraction(ci, "ci")
    require(trials, [*by, metric, objective, "trial_id", "reached_target"],
            "steps_to_target_frontier")
    name = metric.removesuffix("_to_target")
    pool = eligible(trials, statuses, "steps_to_target_frontier")
    pool = pool.assign(_value=floats(pool[metric]))
    hit = pool[pool["reached_target"].eq(True) & pool["_value"].notna()]
    hit = hit.sort_values(
        ["_value", objective], ascending=[True, direction == "minimize"], kind="stable"
    )
    out = _counts(trials, pool, hit, by)
    out = out.merge(_best_and_interval(trials, hit, by, name, top_k, n_boot, seed, ci),
                    on=by, how="left")
    out["n_pool"] = np.minimum(out["n_reached"], top_k)
    out["reason"] = _frontier_reason(out, top_k, statuses)
    out = out.sort_values(by, kind="stable").reset_index(drop=True)
    columns = [name, f"{name}_lower", f"{name}_upper"]
    out[columns] = out[columns].astype("float64")
    return out[[*by, "trial_id", *columns, "n_trials", "n_reached", "n_pool", "reason"]]


def _best_and_interval(trials: pd.DataFrame, hit: pd.DataFrame, by: list[str], name: str,
                       top_k: int, n_boot: int, seed: int, ci: float) -> pd.DataFrame:
    """Per group of the reaching trials ``hit`` (sorted best first): the best trial, its
    value (column ``name``) and the bootstrap interval of the minimum over the top k."""
    grouped = hit.groupby(by, dropna=False, sort=False)
    best = grouped.head(1)[[*by, "trial_id", "_value"]].rename(columns={"_value": name})
    ranges = [
        (*key, *_min_interval(group["_value"].to_numpy(), n_boot, seed, ci))
        for key, group in grouped.head(top_k).groupby(by, dropna=False, sort=False)
    ]
    ranges = pd.DataFrame(ranges, columns=[*by, f"{name}_lower", f"{name}_upper"])
    ranges = ranges.astype({c: trials[c].dtype for c in by})  # an empty frame is all object
    return best.merge(ranges, on=by, how="left")


def _counts(trials: pd.DataFrame, pool: pd.DataFrame, hit: pd.DataFrame,
            by: list[str]) -> pd.DataFrame:
    """Per group of ``by`` in ``trials``: _all (any status), n_trials (in ``pool``), n_reached."""
    counts = trials.groupby(by, dropna=False).size().rename("_all").reset_index()
    for frame, column in ((pool, "n_trials"), (hit, "n_reached")):
        sizes = frame.groupby(by, dropna=False).size().rename(column).reset_index()
        counts = counts.merge(sizes, on=by, how="left")
    counts[["n_trials", "n_reached"]] = counts[["n_trials", "n_reached"]].fillna(0).astype(int)
    return counts


def _min_interval(values: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile-bootstrap interval of the minimum of ``values`` (the point if one value)."""
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    res = stats.bootstrap(
        (values,), np.min, n_resamples=n_boot, confidence_level=ci, method="percentile",
        rng=rng,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _frontier_reason(
    out: pd.DataFrame, top_k: int, statuses: Sequence[str] | None
) -> pd.Series:
    n_trials, n_reached = out["n_trials"].astype(str), out["n_reached"].astype(str)
    conditions = [
        out["n_trials"] == 0,
        out["n_reached"] == 0,
        out["n_reached"] == 1,
        out["n_reached"] < top_k,
    ]
    texts = [
        f"no trial with {statuses_text(statuses)} (of " + out["_all"].astype(str) + " here)",
        "none of the " + n_trials + f" trials with {statuses_text(statuses)} reached the target",
        pd.Series("one trial reached the target: the interval collapses to the point",
                  index=out.index),
        "only " + n_reached + f" trials reached the target (top_k={top_k}): the bootstrap"
        " resamples those",
    ]
    reason = pd.Series(None, index=out.index, dtype=object)
    for condition, text in reversed(list(zip(conditions, texts, strict=True))):
        reason = reason.mask(condition, text)
    return reason
