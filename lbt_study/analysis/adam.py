"""Adam-era scaling: the steps to target by beta2 rule and batch size, with the beta2 and the
AdamW timescale tau each trial ran with, and the "surge" of the optimal learning rate (Li et
al. 2024: for Adam it rises with B and then falls past a point)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import CannotCompute, require
from lbt_study.analysis.best import best_per_batch_size
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.train.names import ADAM_FAMILY

ADAM_COLUMNS = ("beta2_rule", "batch_size", "trial_id", "steps", "steps_upper", "n_trials",
                "n_reached", "adam_beta2", "adamw_tau_epochs", "final_objective")


def is_adam_study(trials: pd.DataFrame) -> bool:
    return "optimizer" in trials.columns and bool(trials["optimizer"].isin(ADAM_FAMILY).any())


def adam_table(trials: pd.DataFrame, direction: str, target: float | None,
               statuses: tuple[str, ...] = ("ok", "pruned")) -> pd.DataFrame:
    """One row per (beta2_rule, batch size) of the Adam-family trials: the fastest trial to
    the target (the frontier of each rule) or, without a target, the best by objective, with
    its adam_beta2, adamw_tau_epochs and final objective."""
    require(trials, ["batch_size", "optimizer", "trial_id", "final_objective"], "adam_table")
    pool = trials[trials["optimizer"].isin(ADAM_FAMILY)]
    if pool.empty:
        raise CannotCompute("no trial used an Adam-family optimizer (adamw, lamb)")
    pool = pool.assign(beta2_rule=pool.get("beta2_rule", "fixed"))
    by = ("beta2_rule", "batch_size")
    if target is not None and "steps_to_target" in pool.columns:
        front = steps_to_target_frontier(pool, direction, by=by, statuses=statuses)
    else:
        front = best_per_batch_size(pool, direction, by=by).assign(steps=math.nan,
                                                                   steps_upper=math.nan)
    extra = pool.set_index("trial_id").reindex(front["trial_id"])
    for column in ("adam_beta2", "adamw_tau_epochs", "final_objective"):
        front[column] = extra[column].to_numpy() if column in extra else math.nan
    return front.reindex(columns=list(ADAM_COLUMNS))


def lr_surge(points: pd.DataFrame) -> str | None:
    """Where the optimal learning rate falls as B grows past a point: the largest lr_opt at
    a batch size whose optimum lies inside the lrs tried, and a larger batch size whose
    interval lies wholly below that one's. None when there is no such fall."""
    inside = points[~points["edge"].fillna(False).astype(bool)].dropna(subset=["lr_opt"])
    if len(inside) < 3:
        return None
    peak = inside.loc[inside["lr_opt"].idxmax()]
    later = inside[(inside["batch_size"] > peak["batch_size"])
                   & (inside["lr_opt_upper"] < peak["lr_opt_lower"])]
    if later.empty:
        return None
    sizes = ", ".join(f"{b:g}" for b in later["batch_size"])
    return (f"the optimal learning rate peaks at B = {peak['batch_size']:g} (lr_opt "
            f"{peak['lr_opt']:.3g} [{peak['lr_opt_lower']:.3g}, {peak['lr_opt_upper']:.3g}]) and "
            f"falls below that interval at B = {sizes}: the surge of Li et al. 2024")


def rule_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Per batch size with both rules: steps to target under fixed and half_life, which rule
    is faster beyond the other's resampling interval (``faster``: missing when neither), and
    ``same_beta2`` where both ran the same beta2 (at the reference batch size), so that a
    difference there comes from the learning rates searched, not the rule."""
    wide = table.pivot_table(index="batch_size", columns="beta2_rule",
                             values=["steps", "steps_upper"], aggfunc="first")
    if not {"fixed", "half_life"} <= set(table["beta2_rule"]):
        return pd.DataFrame(columns=["batch_size", "steps_fixed", "steps_half_life", "faster",
                                     "same_beta2"])
    out = pd.DataFrame({"batch_size": wide.index,
                        "steps_fixed": wide[("steps", "fixed")].to_numpy(),
                        "steps_half_life": wide[("steps", "half_life")].to_numpy()})
    up_f, up_h = wide[("steps_upper", "fixed")].to_numpy(), wide[("steps_upper",
                                                                  "half_life")].to_numpy()
    faster = pd.Series([None] * len(out), dtype=object)
    faster[(out["steps_half_life"] > up_f).to_numpy()] = "fixed"
    faster[(out["steps_fixed"] > up_h).to_numpy()] = "half_life"
    beta2 = table.pivot_table(index="batch_size", columns="beta2_rule", values="adam_beta2",
                              aggfunc="first")
    same = np.isclose(beta2["fixed"], beta2["half_life"]).tolist()
    return out.assign(faster=faster.to_numpy(), same_beta2=same)


@dataclass(frozen=True, eq=False)
class AdamScaling:
    """table: ``adam_table``; comparison: ``rule_comparison`` of it; surge: ``lr_surge`` of
    the learning-rate fit's points (None: no fall found, or no fit)."""

    table: pd.DataFrame
    comparison: pd.DataFrame
    surge: str | None


def adam_scaling(trials: pd.DataFrame, direction: str, target: float | None,
                 lr_points: pd.DataFrame | None) -> AdamScaling:
    table = adam_table(trials, direction, target)
    surge = None if lr_points is None or lr_points.empty else lr_surge(lr_points)
    return AdamScaling(table, rule_comparison(table), surge)
