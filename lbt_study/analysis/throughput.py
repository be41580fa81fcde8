"""Training throughput against batch size and workers, and how well workers scale it.

Throughput is the trials table's ``throughput``: training examples per second, evaluation
excluded. It belongs to the hardware and the batch plan, not to the hyperparameters, so the
best (highest) measurement per (batch size, workers) is taken. Goyal et al. (2017) report the
same worker-scaling efficiency: throughput on w workers over w times that on one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lbt_study.analysis._checks import eligible, floats, require, statuses_text


def throughput_frontier(
    trials: pd.DataFrame,
    batch_col: str = "batch_size",
    workers_col: str = "workers",
    throughput_col: str = "throughput",
    statuses: Sequence[str] | None = ("ok", "pruned"),
) -> pd.DataFrame:
    """The highest throughput per (batch size, workers), and two efficiencies.

    Returns one row per (batch size, workers) present in ``trials``, sorted by both. Columns:
    batch size and workers (named by the arguments), ``trial_id`` (the fastest trial),
    ``throughput`` (its examples/s; only trials with status in ``statuses`` and a finite
    throughput > 0 count; a pruned trial's speed is as real as a finished one's),
    ``n_trials`` (those trials), ``efficiency_workers`` = throughput(B, w) / (w x
    throughput(B, 1)) (1 = perfect strong scaling at fixed global batch B; NaN when no
    1-worker measurement at B exists), ``speedup_vs_smallest_batch`` = throughput(B, w) /
    throughput(B_min, w) with B_min the smallest batch measured on w workers (the ratio of
    per-example times; > 1 when a bigger batch uses the hardware better), and ``reason``
    (missing, or why a value is NaN).
    """
    keys = [batch_col, workers_col]
    require(trials, [*keys, throughput_col, "trial_id"], "throughput_frontier")
    pool = eligible(trials, statuses, "throughput_frontier").reset_index(drop=True)
    pool = pool[[*keys, "trial_id"]].assign(throughput=floats(pool[throughput_col]))
    pool = pool[pool["throughput"].gt(0) & pool["throughput"].lt(float("inf"))]
    pool = pool.assign(n_trials=pool.groupby(keys)["trial_id"].transform("size"))
    fastest = pool.loc[pool.groupby(keys)["throughput"].idxmax().to_numpy()]

    out = trials[keys].drop_duplicates().merge(fastest, on=keys, how="left")
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    out["n_trials"] = out["n_trials"].fillna(0).astype(int)
    one = out.loc[floats(out[workers_col]) == 1].set_index(batch_col)["throughput"]
    out["efficiency_workers"] = out["throughput"] / (
        floats(out[workers_col]) * out[batch_col].map(one)
    )
    measured = out[out["throughput"].notna()]
    smallest = measured.groupby(workers_col)["throughput"].first()  # sorted by batch size
    out["speedup_vs_smallest_batch"] = out["throughput"] / out[workers_col].map(smallest)
    out["reason"] = _reason(out, batch_col, statuses)
    return out[[*keys, "trial_id", "throughput", "n_trials", "efficiency_workers",
                "speedup_vs_smallest_batch", "reason"]]


def _reason(out: pd.DataFrame, batch_col: str, statuses: Sequence[str] | None) -> pd.Series:
    reason = pd.Series(None, index=out.index, dtype=object)
    no_one = out["efficiency_workers"].isna()
    reason = reason.mask(
        no_one,
        f"no 1-worker throughput at {batch_col} " + out[batch_col].astype(str)
        + ": no worker-scaling efficiency",
    )
    return reason.mask(
        out["throughput"].isna(), f"no trial with {statuses_text(statuses)} and a throughput > 0"
    )
