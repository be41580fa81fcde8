"""What to run: the configuration that reaches the target soonest by each goal, the prediction
of the fitted curves beside the measurement, and how well those curves predict a batch size
they were not fitted to.

``recommend`` picks, for each goal (fewest steps, fewest examples, least training time, least
cost), the measured batch size whose fastest trial did best, and that trial's settings
(workers, learning rate, warmup, normalization). It never extrapolates: the choice is always a
batch size that was measured, and when it is the smallest or largest one measured it says the
optimum may lie beyond. It says "not enough evidence" when the runner-up batch size lies within
the choice's resampling interval (the frontier's upper end: the value the point rises to
without its luckiest trials). The McCandlish fit S(B) = S_min (1 + B_crit / B) gives the
predicted steps and examples; seconds and cost are the predicted steps times the chosen trial's
training seconds per step. ``leave_one_out`` refits the curve without each batch size in turn
and predicts that batch size's steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import CannotCompute, check_direction
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.scaling import critical_batch_size

GOALS = ("steps", "examples", "time", "cost")
"""What a recommendation minimises, each a column of the trials table to the target."""

METRIC = {"steps": "steps_to_target", "examples": "examples_to_target",
          "time": "seconds_to_target", "cost": "cost_to_target"}
MEASURED = ("steps", "examples", "seconds", "cost")
SETTINGS = ("workers", "learning_rate", "warmup_epochs", "norm")
RECOMMEND_COLUMNS = ("goal", "batch_size", *SETTINGS, "trial_id", "evidence",
                     *(f"measured_{m}" for m in MEASURED), *(f"predicted_{m}" for m in MEASURED),
                     "validity")
RECOMMEND_NEEDS = ("batch_size", "trial_id", "reached_target", "final_objective",
                   "steps_to_target", "examples_to_target", "seconds_to_target", "workers",
                   "learning_rate")
"""The trials-table columns ``recommend`` reads (warmup_epochs and norm when present)."""
LOO_COLUMNS = ("batch_size", "measured_steps", "predicted_steps", "relative_error",
               "extrapolated", "reason")


@dataclass(frozen=True, eq=False)
class Recommendation:
    """table: one row per goal (``RECOMMEND_COLUMNS``). loo: ``leave_one_out`` of the steps
    frontier. b_crit, fit_reason: the McCandlish fit the predictions come from. workers,
    price_per_hour: the filters and price it ran with (None: every trial; not priced)."""

    table: pd.DataFrame
    loo: pd.DataFrame
    b_crit: float
    fit_reason: str | None
    workers: int | None
    price_per_hour: float | None


def with_cost(trials: pd.DataFrame, price_per_hour: float | None) -> pd.DataFrame:
    """``trials`` with ``cost_to_target``: training seconds to the target x workers x the price
    per device-hour / 3600 (NaN without a price)."""
    if price_per_hour is not None and not (math.isfinite(price_per_hour) and price_per_hour > 0):
        raise ValueError(f"price_per_hour must be a positive number; got {price_per_hour!r}")
    price = math.nan if price_per_hour is None else price_per_hour
    workers = (pd.to_numeric(trials["workers"], errors="coerce").fillna(1)
               if "workers" in trials.columns else 1)
    return trials.assign(cost_to_target=trials["seconds_to_target"] * workers * price / 3600)


def _workers(value: object) -> float:
    """A trial's workers; 1 where the table does not say (one worker is the default)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1.0
    return number if math.isfinite(number) else 1.0


def recommend(trials: pd.DataFrame, direction: str, *, price_per_hour: float | None = None,
              workers: int | None = None, ci: float = 0.95,
              statuses: Sequence[str] | None = ("ok", "pruned")) -> Recommendation:
    """The recommendation of every goal in ``GOALS`` from the trials that reached the target.

    ``workers``: only trials with that many workers. Raises ``CannotCompute`` when no trial
    reached the target (or none has that many workers)."""
    check_direction(direction)
    pool = with_cost(trials, price_per_hour)
    if workers is not None:
        pool = pool[pool["workers"] == workers]
        if pool.empty:
            have = sorted(int(w) for w in trials["workers"].dropna().unique())
            raise CannotCompute(f"no trial ran with {workers} workers; the study has {have}")
    if not pool["reached_target"].fillna(False).astype(bool).any():
        raise CannotCompute("no trial reached the target")
    frontiers = {goal: _frontier(pool, direction, goal, ci, statuses) for goal in GOALS}
    steps = frontiers["steps"]
    fit = critical_batch_size(steps.dropna(subset=["steps"]))
    rows = [_row(goal, frontiers[goal], pool, fit, price_per_hour) for goal in GOALS]
    table = pd.DataFrame(rows, columns=list(RECOMMEND_COLUMNS))
    return Recommendation(table=table, loo=leave_one_out(steps), b_crit=fit.b_crit_fit,
                          fit_reason=fit.fit_reason, workers=workers,
                          price_per_hour=price_per_hour)


def _frontier(pool: pd.DataFrame, direction: str, goal: str, ci: float,
              statuses: Sequence[str] | None) -> pd.DataFrame:
    metric = METRIC[goal]
    frontier = steps_to_target_frontier(pool, direction, metric=metric, ci=ci,
                                        statuses=statuses)
    return frontier[~frontier["censored"].eq(True)] if "censored" in frontier else frontier


def _row(goal: str, frontier: pd.DataFrame, pool: pd.DataFrame, fit,
         price: float | None) -> dict:
    """One goal's recommendation: the batch size of ``frontier`` (the goal's, uncensored)
    with the least of its metric, and its fastest trial's settings from ``pool``."""
    name = METRIC[goal].removesuffix("_to_target")
    frontier = frontier.dropna(subset=[name])
    if frontier.empty:
        unpriced = goal == "cost" and price is None
        why = "no price per device-hour given" if unpriced else "no trial reached the target"
        return {"goal": goal, "evidence": "not priced" if unpriced else "not enough evidence",
                "validity": why}
    ordered = frontier.sort_values([name, "batch_size"], kind="stable")
    best = ordered.iloc[0]
    trial = pool.loc[pool["trial_id"] == best["trial_id"]].iloc[0]
    notes, evidence = _validity(ordered, name, frontier["batch_size"], fit)
    measured = {f"measured_{m}": float(trial.get(f"{m}_to_target", math.nan)) for m in MEASURED}
    return {"goal": goal, "batch_size": float(best["batch_size"]),
            **{k: trial.get(k) for k in SETTINGS}, "workers": _workers(trial.get("workers")),
            "trial_id": best["trial_id"],
            "evidence": evidence, **measured, **_predicted(trial, fit, price),
            "validity": "; ".join(notes) or "within the batch sizes measured"}


def _validity(ordered: pd.DataFrame, name: str, measured_b: pd.Series,
              fit) -> tuple[list[str], str]:
    """Where the choice stands: at an edge of the batch sizes measured, tied with the runner-up
    within its resampling interval, or without a fitted curve to predict from."""
    best, notes, evidence = ordered.iloc[0], [], "clear"
    b = float(best["batch_size"])
    if len(measured_b) > 1 and b in (measured_b.min(), measured_b.max()):
        edge = "smallest" if b == measured_b.min() else "largest"
        notes.append(f"the {edge} batch size measured: the optimum for this goal may lie "
                     "beyond it (not extrapolated)")
    if len(ordered) > 1:
        runner = ordered.iloc[1]
        upper = float(best.get(f"{name}_upper", math.nan))
        if not runner[name] > upper:
            evidence = "not enough evidence"
            notes.append(f"B={runner['batch_size']:g} ({runner[name]:.4g}) lies within this "
                         f"point's resampling interval [{best[name]:.4g}, {upper:.4g}]")
    if not math.isfinite(fit.b_crit_fit):
        notes.append(f"no prediction: {fit.fit_reason}")
    return notes, evidence


def _predicted(trial: pd.Series, fit, price: float | None) -> dict:
    """The fitted curve's steps and examples at the trial's batch size; seconds and cost at
    the trial's own training seconds per step."""
    b = float(trial["batch_size"])
    steps = fit.s_min * (1 + fit.b_crit_fit / b)
    per_step = trial["seconds_to_target"] / trial["steps_to_target"]
    seconds = steps * per_step
    workers = _workers(trial.get("workers"))
    cost = seconds * workers * price / 3600 if price is not None else math.nan
    return {"predicted_steps": steps, "predicted_examples": steps * b,
            "predicted_seconds": seconds, "predicted_cost": cost}


def leave_one_out(steps: pd.DataFrame) -> pd.DataFrame:
    """For each batch size of the steps frontier, the McCandlish fit to the others and its
    prediction of this one's steps; relative_error = predicted / measured - 1. extrapolated:
    the batch size lies outside the ones the fit saw (the smallest or largest)."""
    points = steps.dropna(subset=["steps"]).sort_values("batch_size")
    rows = []
    for b, measured in zip(points["batch_size"], points["steps"], strict=True):
        rest = points[points["batch_size"] != b]
        outside = bool(b < rest["batch_size"].min() or b > rest["batch_size"].max())
        fit = critical_batch_size(rest) if len(rest) >= 3 else None
        if fit is None or not math.isfinite(fit.b_crit_fit):
            why = fit.fit_reason if fit is not None else "fewer than 3 other batch sizes"
            rows.append((b, measured, math.nan, math.nan, outside, f"no fit: {why}"))
            continue
        predicted = fit.s_min * (1 + fit.b_crit_fit / b)
        rows.append((b, measured, predicted, predicted / measured - 1, outside, None))
    return pd.DataFrame(rows, columns=list(LOO_COLUMNS))


def loo_summary(loo: pd.DataFrame) -> dict[str, float]:
    """The median absolute relative error of the leave-one-out predictions, inside the
    batch sizes fitted (interpolated) and at the edges (extrapolated)."""
    err = loo["relative_error"].abs()
    inside = err[~loo["extrapolated"].astype(bool)].dropna()
    edge = err[loo["extrapolated"].astype(bool)].dropna()
    return {"interpolated": float(np.median(inside)) if len(inside) else math.nan,
            "extrapolated": float(np.median(edge)) if len(edge) else math.nan}
