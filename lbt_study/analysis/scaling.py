"""Reading a steps-to-target frontier: scaling regimes and the critical batch size.

Input is a frontier, one row per batch size with its steps to target (as
``steps_to_target_frontier`` returns). Three readings of it:

- the regimes of Shallue et al. (2018): perfect scaling, diminishing returns, maximal data
  parallelism (``classify_regimes``);
- McCandlish et al. (2018), "An Empirical Model of Large-Batch Training": steps follow
  S(B) = S_min (1 + B_crit / B), so examples E = S B follow E_min (1 + B / B_crit) with
  E_min = S_min B_crit (``critical_batch_size``, fitted);
- Zhang et al. (2024), "How Does Critical Batch Size Scale in Pre-training?": the critical
  batch size is where steps exceed perfect linear scaling from the smallest batch by 20%
  (``critical_batch_size``, read off the measured points).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from lbt_study.analysis._checks import (
    as_list,
    check_fraction,
    check_positive,
    floats,
    group_keys,
    require,
)

REGIMES = ("perfect scaling", "diminishing returns", "maximal data parallelism")
_BOUND = 1e4  # the fit looks for B_crit within [B_min / _BOUND, B_max * _BOUND]


def classify_regimes(
    frontier: pd.DataFrame,
    batch_col: str = "batch_size",
    steps_col: str = "steps",
    perfect_tol: float = 0.2,
    plateau_tol: float = 0.1,
    by: str | Sequence[str] = (),
) -> pd.DataFrame:
    """Label each batch size with its scaling regime (Shallue et al. 2018, section 4).

    The rule, per curve (per group of ``by``; the whole frame for ``by=()``), on the points
    with steps > 0, in increasing batch size. B0, S0 are the smallest such batch size and
    its steps; ``examples_ratio`` = S B / (S0 B0) (1 means steps fell exactly as 1/B);
    ``step_decrease`` = (S_prev - S) / S_prev with S_prev the steps at the previous point.

    - "perfect scaling" if examples_ratio <= 1 + perfect_tol (so B0 itself always is);
    - else "maximal data parallelism" if step_decrease < plateau_tol (steps no longer fall);
    - else "diminishing returns".

    With the default perfect_tol=0.2 the first point past perfect scaling is past Zhang et
    al.'s critical batch size. Returns ``frontier`` sorted by (``by``, batch size), index
    0..n-1, with columns ``examples_ratio``, ``step_decrease``, ``regime`` (one of
    ``REGIMES``, missing for a point without steps > 0) and ``regime_reason`` (why missing).
    """
    by = as_list(by)
    require(frontier, [*by, batch_col, steps_col], "classify_regimes", "frontier")
    for value, name in ((perfect_tol, "perfect_tol"), (plateau_tol, "plateau_tol")):
        if not value >= 0:
            raise ValueError(f"classify_regimes: {name} must be >= 0, got {value!r}")
    _check_one_point_per_batch(frontier, [*by, batch_col], "classify_regimes")
    out = frontier.sort_values([*by, batch_col], kind="stable").reset_index(drop=True)
    steps, batch = floats(out[steps_col]), floats(out[batch_col])
    usable = (steps > 0) & (batch > 0)
    work = (steps * batch).where(usable)
    ratio = work / work.groupby(group_keys(out, by), dropna=False).transform("first")
    kept = steps[usable]
    previous = kept.groupby(group_keys(out[usable], by), dropna=False).shift(1)
    decrease = ((previous - kept) / previous).reindex(out.index)
    regime = np.select(
        [~usable, ratio <= 1 + perfect_tol, decrease < plateau_tol],
        [None, REGIMES[0], REGIMES[2]],
        default=REGIMES[1],
    )
    reason = pd.Series(None, index=out.index, dtype=object)
    reason[steps.isna()] = f"no {steps_col} value (no trial reached the target?)"
    reason[steps.notna() & ~usable] = f"{steps_col} or {batch_col} not > 0: no scaling to read"
    return out.assign(
        examples_ratio=ratio, step_decrease=decrease, regime=regime, regime_reason=reason
    )


def _check_one_point_per_batch(frame: pd.DataFrame, keys: list[str], what: str) -> None:
    repeated = frame[frame.duplicated(keys, keep=False)]
    if len(repeated):
        first = repeated.iloc[0][keys].to_dict()
        raise ValueError(
            f"{what}: the frontier has {len(repeated)} rows sharing {first}; one row per "
            f"batch size is needed (split the frontier by the other keys, e.g. norm)"
        )


@dataclass(frozen=True, eq=False)
class CriticalBatchSize:
    """Critical batch size estimates for one steps-to-target frontier.

    b_crit_fit, b_crit_fit_lower, b_crit_fit_upper, s_min, e_min, fit_reason: McCandlish et
    al. (2018), S(B) = S_min (1 + B_crit / B), E_min = S_min B_crit; the interval is at level
    ``ci`` from the fit's covariance (see ``critical_batch_size``). b_crit_zhang, zhang_reason:
    Zhang et al. (2024), steps 20% above perfect linear scaling. gns, gns_reason: a gradient
    noise scale given by the caller, B_simple of McCandlish et al., which predicts B_crit.
    A reason is None when the value needs no comment; every NaN value has one.
    points: one row per frontier point (see ``critical_batch_size``), for plots.
    """

    b_crit_fit: float
    b_crit_fit_lower: float
    b_crit_fit_upper: float
    s_min: float
    e_min: float
    fit_reason: str | None
    b_crit_zhang: float
    zhang_reason: str | None
    gns: float
    gns_reason: str | None
    ci: float
    points: pd.DataFrame

    def estimates(self) -> pd.DataFrame:
        """One row per estimate: method, b_crit, lower, upper (NaN without an interval), reason."""
        return pd.DataFrame({
            "method": ["mccandlish_fit", "zhang_20pct", "gns_simple"],
            "b_crit": [self.b_crit_fit, self.b_crit_zhang, self.gns],
            "lower": [self.b_crit_fit_lower, math.nan, math.nan],
            "upper": [self.b_crit_fit_upper, math.nan, math.nan],
            "reason": [self.fit_reason, self.zhang_reason, self.gns_reason],
        })


def critical_batch_size(
    frontier: pd.DataFrame,
    batch_col: str = "batch_size",
    steps_col: str = "steps",
    examples_col: str | None = None,
    gns: float | None = None,
    ci: float = 0.95,
    excess: float = 0.2,
) -> CriticalBatchSize:
    """The critical batch size of one frontier (one row per batch size), two ways.

    (a) McCandlish et al. (2018): S(B) = S_min (1 + B_crit / B) fitted by nonlinear least
    squares (``scipy.optimize.curve_fit``) on log S, i.e. on relative errors, since steps span
    orders of magnitude; parameters ln S_min and ln B_crit, B_crit searched within
    [B_min / 1e4, B_max * 1e4]. Interval: ln B_crit +- t(ci, n - 2) x its standard error from
    the fit's covariance (scaled by the residual variance), mapped back with exp, so it is
    asymmetric; deterministic. Needs >= 3 points; NaN with a reason when the fit runs to the
    edge of its range (steps still fall as 1/B at the largest batch: B_crit above it; or
    steps never fall: B_crit below the smallest). E_min = S_min B_crit.
    (b) Zhang et al. (2024): with B0, S0 the smallest batch size and its steps, the smallest B
    where S(B) >= (1 + excess) S0 B0 / B. Between the last point below and the first at or
    above, log S is taken as linear in log B (the straight segment of the log-log plot) and
    the crossing solved on it. NaN with a reason when no point exceeds it.
    The two answer different questions: an exact McCandlish curve crosses the 20% line at B =
    1.2 B0 + 0.2 B_crit, so it sits far below B_crit and moves with the smallest batch size
    measured. Points used: steps and batch size finite and > 0. ``gns`` (e.g. the median
    final_gns_simple of the frontier's trials) is carried beside them.

    ``points``: one row per frontier row sorted by batch size: batch_size, steps, examples
    (``examples_col``, or steps x batch size), examples_ratio (S B / (S0 B0)), steps_perfect
    (S0 B0 / B), steps_zhang ((1 + excess) S0 B0 / B), steps_fit and examples_fit (the fitted
    McCandlish curve; NaN when the fit failed).
    """
    check_fraction(ci, "ci")
    check_positive(excess, "excess")
    require(frontier, [batch_col, steps_col, *([examples_col] if examples_col else [])],
            "critical_batch_size", "frontier")
    _check_one_point_per_batch(frontier, [batch_col], "critical_batch_size")
    ordered = frontier.sort_values(batch_col, kind="stable").reset_index(drop=True)
    batch, steps = floats(ordered[batch_col]), floats(ordered[steps_col])
    usable = (batch > 0) & (steps > 0)
    b, s = batch[usable].to_numpy(), steps[usable].to_numpy()
    fit = _mccandlish_fit(b, s, ci)
    zhang, zhang_reason = _zhang(b, s, excess)
    points = _points(ordered, batch, steps, examples_col, usable, fit, excess)
    gns_value = math.nan if gns is None else float(gns)
    gns_reason = None if math.isfinite(gns_value) else "no finite gradient noise scale given"
    return CriticalBatchSize(
        b_crit_fit=fit["b_crit"], b_crit_fit_lower=fit["lower"], b_crit_fit_upper=fit["upper"],
        s_min=fit["s_min"], e_min=fit["s_min"] * fit["b_crit"], fit_reason=fit["reason"],
        b_crit_zhang=zhang, zhang_reason=zhang_reason, gns=gns_value, gns_reason=gns_reason,
        ci=ci, points=points,
    )


def _log_steps(batch: np.ndarray, ln_s_min: float, ln_b_crit: float) -> np.ndarray:
    """log S(B) of McCandlish et al. (2018): ln S_min + ln(1 + B_crit / B)."""
    return ln_s_min + np.log1p(np.exp(ln_b_crit) / batch)


def _mccandlish_fit(b: np.ndarray, s: np.ndarray, ci: float) -> dict:
    nan = {"s_min": math.nan, "b_crit": math.nan, "lower": math.nan, "upper": math.nan}
    if len(b) < 3:
        return {**nan, "reason": f"{len(b)} batch sizes with steps > 0; the fit needs 3"}
    lo, hi = math.log(b.min() / _BOUND), math.log(b.max() * _BOUND)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(_log_steps, b, np.log(s), p0=_initial_guess(b, s, lo, hi),
                                   bounds=([-np.inf, lo], [np.inf, hi]))
    except (RuntimeError, ValueError) as exc:
        return {**nan, "reason": f"the fit did not converge: {exc}"}
    ln_s_min, ln_b_crit = popt
    if ln_b_crit > hi - 1.0:
        return {**nan, "reason": f"steps still fall as 1/B at the largest batch size "
                                 f"{b.max():g}: B_crit lies above it and cannot be fitted"}
    if ln_b_crit < lo + 1.0:
        return {**nan, "reason": f"steps do not fall with batch size from {b.min():g} on: "
                                 f"B_crit lies below it and cannot be fitted"}
    half = stats.t.ppf((1 + ci) / 2, len(b) - 2) * math.sqrt(pcov[1, 1])
    lower, upper = math.exp(ln_b_crit - half), math.exp(ln_b_crit + half)
    reason = None
    if not b.min() <= math.exp(ln_b_crit) <= b.max():
        reason = (f"B_crit {math.exp(ln_b_crit):.4g} lies outside the measured batch sizes "
                  f"[{b.min():g}, {b.max():g}]: an extrapolation")
    return {"s_min": math.exp(ln_s_min), "b_crit": math.exp(ln_b_crit), "lower": lower,
            "upper": upper, "reason": reason}


def _initial_guess(b: np.ndarray, s: np.ndarray, lo: float, hi: float) -> list[float]:
    """Start values from the linear least-squares fit S = S_min + E_min / B."""
    e_min, s_min = np.polyfit(1 / b, s, 1)
    if s_min > 0 and e_min > 0:
        return [math.log(s_min), float(np.clip(math.log(e_min / s_min), lo, hi))]
    return [math.log(s.min()), math.log(math.sqrt(b.min() * b.max()))]


def _zhang(b: np.ndarray, s: np.ndarray, excess: float) -> tuple[float, str | None]:
    """Zhang et al. (2024)'s critical batch size, and a reason when it is NaN."""
    if len(b) < 2:
        return math.nan, f"{len(b)} batch sizes with steps > 0; the 20% rule needs 2"
    ratio = s * b / (s[0] * b[0])
    above = np.flatnonzero(ratio >= 1 + excess)
    if not above.size:
        return math.nan, (
            f"steps stay within {excess:.0%} of perfect scaling from batch size {b[0]:g} up "
            f"to the largest, {b[-1]:g}: the critical batch size is above it"
        )
    i = above[0]
    log_b = np.interp(math.log1p(excess), np.log(ratio[i - 1:i + 1]), np.log(b[i - 1:i + 1]))
    return float(math.exp(log_b)), None


def _points(ordered: pd.DataFrame, batch: pd.Series, steps: pd.Series,
            examples_col: str | None, usable: pd.Series, fit: dict,
            excess: float) -> pd.DataFrame:
    examples = floats(ordered[examples_col]) if examples_col else steps * batch
    base = (steps * batch)[usable].iloc[0] if usable.any() else math.nan
    steps_fit = fit["s_min"] * (1 + fit["b_crit"] / batch)
    return pd.DataFrame({
        "batch_size": batch, "steps": steps, "examples": examples,
        "examples_ratio": (steps * batch / base).where(usable),
        "steps_perfect": base / batch, "steps_zhang": (1 + excess) * base / batch,
        "steps_fit": steps_fit, "examples_fit": steps_fit * batch,
    })
