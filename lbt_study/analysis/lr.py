"""How the best learning rate (and warmup) moves with batch size: a power law fitted in logs.

Goyal et al. (2017) scale the learning rate linearly with the batch size (exponent 1) and
keep a fixed warmup in epochs; Hoffer et al. (2017) argue for the square-root rule (exponent
0.5). ``lr_scaling`` fits log(lr) = a + k log(B) to the best trial of every batch size and
says which rule the interval on k contains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from lbt_study.analysis._checks import check_fraction, floats, require
from lbt_study.analysis.best import best_per_batch_size

RULES = {"linear_rule_in_ci": 1.0, "sqrt_rule_in_ci": 0.5, "constant_in_ci": 0.0}


@dataclass(frozen=True, eq=False)
class LRScaling:
    """Power-law fits of hyperparameters against batch size, and the points they fit.

    fits: one row per hyperparameter (the learning rate, then warmup), columns
    ``parameter``, ``exponent`` (k), ``exponent_lower``, ``exponent_upper`` (the interval
    at level ``ci``), ``coefficient`` (exp(a): the value at B = 1), ``r_squared``,
    ``n_points``, ``linear_rule_in_ci`` (k = 1, Goyal et al. 2017), ``sqrt_rule_in_ci``
    (k = 0.5, Hoffer et al. 2017), ``constant_in_ci`` (k = 0; missing where the interval is
    NaN) and ``reason`` (missing, or why a value is NaN or what was left out).
    points: the best trial per batch size (``best_per_batch_size``), one row each.
    """

    fits: pd.DataFrame
    points: pd.DataFrame
    ci: float


def lr_scaling(
    trials: pd.DataFrame,
    direction: str,
    metric: str = "final_objective",
    lr_col: str = "learning_rate",
    warmup_col: str | None = "warmup_epochs",
    batch_col: str = "batch_size",
    ci: float = 0.95,
    statuses: Sequence[str] | None = ("ok",),
) -> LRScaling:
    """The exponent k of lr ~ B^k over the best trial of each batch size, with its interval.

    The best trial per batch size is picked by ``metric`` in ``direction`` among trials with
    status in ``statuses`` (``best_per_batch_size``). Then log(value) = a + k log(B) is fitted
    by ordinary least squares (``scipy.stats.linregress``) over the points with value and B
    finite and > 0; the interval is k +- t(ci, n - 2) x stderr(k). Needs 2 points for k and
    3 for the interval. The same fit is made for ``warmup_col`` (e.g. warmup_epochs) when
    the column exists (a row of NaN with a reason when it does not); best trials without
    warmup (0) are left out of it and counted in its reason. Returns an ``LRScaling`` (fits
    and points).
    """
    check_fraction(ci, "ci")
    require(trials, [lr_col], "lr_scaling")
    best = best_per_batch_size(trials, direction, by=(batch_col,), metric=metric,
                               statuses=statuses)
    points = best[best["n_candidates"] > 0].reset_index(drop=True)
    fits = [_power_fit(points, batch_col, lr_col, ci)]
    if warmup_col is not None and warmup_col in trials.columns:
        fits.append(_power_fit(points, batch_col, warmup_col, ci))
    elif warmup_col is not None:
        fits.append(_no_fit(warmup_col, 0, f"the trials table has no {warmup_col!r} column"))
    frame = pd.DataFrame(fits)
    for column in RULES:
        frame[column] = frame[column].astype("boolean")
    return LRScaling(fits=frame, points=points, ci=ci)


def _no_fit(parameter: str, n_points: int, reason: str | None) -> dict:
    """A row of ``LRScaling.fits`` with every value NaN and the reason."""
    return {"parameter": parameter, "exponent": math.nan, "exponent_lower": math.nan,
            "exponent_upper": math.nan, "coefficient": math.nan, "r_squared": math.nan,
            "n_points": n_points, **dict.fromkeys(RULES, pd.NA), "reason": reason}


def _power_fit(points: pd.DataFrame, x_col: str, y_col: str, ci: float) -> dict:
    """OLS fit of log(y) = a + k log(x), as one row of ``LRScaling.fits``."""
    x, y = floats(points[x_col]), floats(points[y_col])
    keep = (x > 0) & (y > 0)
    left_out = int((~keep).sum())
    note = (f"{left_out} of {len(points)} best trials left out ({y_col} or {x_col} missing "
            "or not > 0)" if left_out else None)
    lx, ly = np.log(x[keep].to_numpy()), np.log(y[keep].to_numpy())
    if len(lx) < 2:
        return _no_fit(y_col, len(lx), _join(note, f"{len(lx)} batch sizes to fit; k needs 2"))
    fit = stats.linregress(lx, ly)
    row = _no_fit(y_col, len(lx), note)
    row.update(exponent=fit.slope, coefficient=math.exp(fit.intercept),
               r_squared=fit.rvalue**2)
    if len(lx) < 3:
        return {**row, "reason": _join(note, "2 batch sizes: k is exact, no interval (needs 3)")}
    half = stats.t.ppf((1 + ci) / 2, len(lx) - 2) * fit.stderr
    lower, upper = fit.slope - half, fit.slope + half
    row.update(exponent_lower=lower, exponent_upper=upper)
    row.update({name: bool(lower <= k <= upper) for name, k in RULES.items()})
    return row


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)
