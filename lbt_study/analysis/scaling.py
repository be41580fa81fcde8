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

``critical_batch_size_bootstrap`` starts from the trials instead and gives B_crit a bootstrap
interval: by default the frontier's residuals about the fitted curve resampled and the
bootstrap-t interval taken (``residual_bootstrap``); with ``resample="trials"`` the trials
resampled within each batch size, frontier retaken, curve refitted (percentile interval).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from lbt_study.analysis._checks import (
    CannotCompute,
    as_list,
    check_fraction,
    check_positive,
    eligible,
    floats,
    group_keys,
    require,
)
from lbt_study.analysis.frontier import (
    resampled_minima,
    steps_to_target_frontier,
    trial_groups,
)
from lbt_study.analysis.residual_bootstrap import studentized

REGIMES = ("perfect scaling", "diminishing returns", "maximal data parallelism")
_BOUND = 1e4  # the fit looks for B_crit within [B_min / _BOUND, B_max * _BOUND]
B0_DOMINATES = 0.5  # Zhang's estimate is flagged when (1 + excess) B0 is more than this of it
RESAMPLES = ("residuals", "trials")  # critical_batch_size_bootstrap's resample=
UNEVEN = 0.2  # the fit is flagged when 1 / n_min - 1 / n_max exceeds this (n: trials per B)


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
        raise CannotCompute(
            f"{what}: the frontier has {len(repeated)} rows sharing {first}; one row per "
            f"batch size is needed (split the frontier by the other keys, e.g. norm)"
        )


@dataclass(frozen=True, eq=False)
class RefitBootstrap:
    """B_crit refitted on trial-level bootstrap resamples (``critical_batch_size_bootstrap``).

    samples: B_crit of each of the ``n_boot`` resamples, inf where the fit ran to the top of
    its range (steps still fall as 1/B), 0 where it ran to the bottom, NaN where it had no
    answer (fewer than 3 batch sizes kept a point, or no convergence). n_fits: distinct
    resampled frontiers, each fitted once. lower, upper: the ``ci`` percentile interval, the
    NaN samples counted as 0 for the lower bound and inf for the upper (they widen it on
    both sides); inf / 0 mean unbounded. frac_above, frac_below, frac_undefined: the shares of
    inf, 0 and NaN samples. reason: what those shares do to the interval (None when 0).
    """

    samples: np.ndarray
    n_boot: int
    seed: int
    n_fits: int
    lower: float
    upper: float
    frac_above: float
    frac_below: float
    frac_undefined: float
    reason: str | None


@dataclass(frozen=True, eq=False)
class CriticalBatchSize:
    """Critical batch size estimates for one steps-to-target frontier.

    b_crit_fit, s_min, e_min, fit_reason: McCandlish et al. (2018), S(B) = S_min (1 + B_crit /
    B), E_min = S_min B_crit (see ``critical_batch_size``). b_crit_fit_lower,
    b_crit_fit_upper: its interval at level ``ci``, by ``interval``: "trial bootstrap" (the
    refits of ``bootstrap``, from ``critical_batch_size_bootstrap``) or "fit covariance"
    (from a frontier alone). b_crit_cov_lower, b_crit_cov_upper: the fit-covariance interval
    in either case. b_crit_zhang, zhang_reason: Zhang et al. (2024), steps 20% above perfect
    linear scaling from b0, the smallest batch size measured; zhang_b0_share = (1 + excess)
    b0 / b_crit_zhang, the part of it that is the smallest batch size (on a McCandlish curve
    the estimate is (1 + excess) b0 + excess B_crit); above 0.5 zhang_reason says so. gns,
    gns_reason: a gradient noise scale given by the caller, B_simple of McCandlish et al.,
    which predicts B_crit. A reason is None when the value needs no comment; every NaN
    value has one. points: one row per frontier point (see ``critical_batch_size``).
    """

    b_crit_fit: float
    b_crit_fit_lower: float
    b_crit_fit_upper: float
    interval: str
    b_crit_cov_lower: float
    b_crit_cov_upper: float
    s_min: float
    e_min: float
    fit_reason: str | None
    b_crit_zhang: float
    zhang_reason: str | None
    b0: float
    zhang_b0_share: float
    gns: float
    gns_reason: str | None
    ci: float
    points: pd.DataFrame
    bootstrap: RefitBootstrap | None = None

    def estimates(self) -> pd.DataFrame:
        """One row per estimate: method, b_crit, lower, upper (NaN without an interval),
        ratio_to_b_crit (b_crit / the fitted B_crit; for zhang_20pct and gns_simple) and
        reason. mccandlish_fit carries the interval of ``interval``; mccandlish_fit_cov, the
        same fit with its covariance interval, is a row of its own after a trial bootstrap."""
        boot = self.bootstrap
        fit_reason = "; ".join(r for r in (self.fit_reason, boot and boot.reason) if r) or None
        rows = [("mccandlish_fit", self.b_crit_fit, self.b_crit_fit_lower,
                 self.b_crit_fit_upper, fit_reason)]
        if boot is not None:
            rows.append(("mccandlish_fit_cov", self.b_crit_fit, self.b_crit_cov_lower,
                         self.b_crit_cov_upper, self.fit_reason))
        rows += [("zhang_20pct", self.b_crit_zhang, math.nan, math.nan, self.zhang_reason),
                 ("gns_simple", self.gns, math.nan, math.nan, self.gns_reason)]
        table = pd.DataFrame(rows, columns=["method", "b_crit", "lower", "upper", "reason"])
        ratio = table["b_crit"] / self.b_crit_fit
        table.insert(4, "ratio_to_b_crit", ratio.where(~table["method"].str.startswith("mcc")))
        return table


def _with_censored(reason: str | None, frontier: pd.DataFrame, batch_col: str) -> str | None:
    """The fit's reason, and which batch sizes it left out as censored (no trial reached the
    target within its budget: their steps to target are only known to exceed it)."""
    if "censored" not in frontier.columns:
        return reason
    censored = frontier.loc[frontier["censored"].eq(True), batch_col]
    if censored.empty:
        return reason
    listed = ", ".join(f"{b:g}" for b in censored)
    note = (f"censored batch sizes left out of the fit: {listed} (no trial reached the target "
            "within its budget; their steps to target exceed it, so B_crit may be larger)")
    return note if reason is None else f"{reason}; {note}"


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
    [B_min / 1e4, B_max * 1e4]. Interval ("fit covariance"): ln B_crit +- t(ci, n - 2) x its
    standard error from the fit's covariance (scaled by the residual variance), mapped back
    with exp, so it is asymmetric; deterministic. It counts only the points' scatter about
    the curve, not how noisy each point is (each is a minimum over a few trials):
    ``critical_batch_size_bootstrap`` resamples the trials for that. Needs >= 3 points; NaN
    with a reason when the fit runs to the edge of its range (steps still fall as 1/B at the
    largest batch: B_crit above it; or steps never fall: B_crit below the smallest).
    E_min = S_min B_crit.
    (b) Zhang et al. (2024): with B0, S0 the smallest batch size and its steps, the smallest B
    where S(B) >= (1 + excess) S0 B0 / B. Between the last point below and the first at or
    above, log S is taken as linear in log B (the straight segment of the log-log plot) and
    the crossing solved on it. NaN with a reason when no point exceeds it.
    The two differ: an exact McCandlish curve crosses the line at (1 + excess) B0 + excess
    B_crit, never below (1 + excess) B0; the share of that term is the estimate's elasticity
    in B0, and above ``B0_DOMINATES`` ``zhang_reason`` says so (see ``_zhang_context``).
    Points used: steps and batch size finite and > 0. ``gns`` (e.g. the median noise scale
    of the frontier's trials) is carried beside them.

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
    b0, share, note = _zhang_context(b, zhang, excess, fit["b_crit"])
    points = _points(ordered, batch, steps, examples_col, usable, fit, excess)
    gns_value = math.nan if gns is None else float(gns)
    gns_reason = None if math.isfinite(gns_value) else "no finite gradient noise scale given"
    return CriticalBatchSize(
        b_crit_fit=fit["b_crit"], b_crit_fit_lower=fit["lower"], b_crit_fit_upper=fit["upper"],
        interval="fit covariance", b_crit_cov_lower=fit["lower"], b_crit_cov_upper=fit["upper"],
        s_min=fit["s_min"], e_min=fit["s_min"] * fit["b_crit"],
        fit_reason=_with_censored(fit["reason"], ordered, batch_col),
        b_crit_zhang=zhang, zhang_reason=note or zhang_reason, b0=b0, zhang_b0_share=share,
        gns=gns_value, gns_reason=gns_reason, ci=ci, points=points,
    )


def _zhang_context(b: np.ndarray, zhang: float, excess: float,
                   b_crit: float) -> tuple[float, float, str | None]:
    """B0 (the smallest batch size measured), the share (1 + excess) B0 / ``zhang`` and, when
    that share is above ``B0_DOMINATES``, the note saying so.

    On a McCandlish curve the estimate is (1 + excess) B0 + excess B_crit, so the share is
    its elasticity in B0: starting the sweep at 2 B0 raises it by that fraction. Above one
    half the estimate says more about where the sweep started than about the curve.
    """
    b0 = float(b[0]) if len(b) else math.nan
    share = (1 + excess) * b0 / zhang if math.isfinite(zhang) else math.nan
    if not share > B0_DOMINATES:
        return b0, share, None
    implied = (f"; with the fitted B_crit {b_crit:.4g} that is {(1 + excess) * b0:.4g} + "
               f"{excess * b_crit:.4g} = {(1 + excess) * b0 + excess * b_crit:.4g}"
               if math.isfinite(b_crit) else "")
    return b0, share, (f"this estimate moves with the smallest batch size measured (B0 = "
                       f"{b0:g}): on a McCandlish curve it equals {1 + excess:g} B0 + "
                       f"{excess:g} B_crit, and {1 + excess:g} B0 is {share:.0%} of it{implied}")


def critical_batch_size_bootstrap(
    trials: pd.DataFrame,
    direction: str,
    metric: str = "steps_to_target",
    batch_col: str = "batch_size",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    excess: float = 0.2,
    gns: float | None = None,
    statuses: Sequence[str] | None = ("ok",),
    objective: str = "final_objective",
    frontier: pd.DataFrame | None = None,
    resample: str = "residuals",
) -> CriticalBatchSize:
    """``critical_batch_size`` of the trials' frontier, with a bootstrap interval of B_crit.

    The point estimates are those of ``critical_batch_size`` on ``steps_to_target_frontier``
    (``metric``, one row per ``batch_col``; ``frontier``: that frontier, already computed with
    these arguments). The interval, by ``resample`` (``RESAMPLES``):

    - "residuals" (default; ``interval`` "residual bootstrap-t"): ``n_boot`` resamples of the
      frontier's residuals about the fitted curve, refitted, and the ``ci`` bootstrap-t
      interval (``residual_bootstrap`` says why not the trials); it covers at its level on
      planted studies (tests/test_coverage.py). A point fit off its range: "trials" instead.
    - "trials" ("trial bootstrap", ``refit_bootstrap``): the trials with status in
      ``statuses`` resampled within each batch size (one never reaching the target counts as
      infinitely slow), minima retaken, refitted; the ``ci`` percentile interval (planted
      independent trials: 0.92 for a nominal 0.95).

    Either way a refit running to the top (bottom) of its range, when such refits exceed
    (1 - ci) / 2, makes the upper (lower) end unbounded (the reason says so). Under 3 points:
    ``critical_batch_size``'s result (NaN interval, ``bootstrap`` None). Very different
    numbers of trials per batch size bias the point beyond either interval: ``_uneven_note``.
    """
    check_positive(n_boot, "n_boot")
    if resample not in RESAMPLES:
        raise ValueError(f"critical_batch_size_bootstrap: resample must be one of "
                         f"{list(RESAMPLES)}, got {resample!r}")
    if frontier is None:
        frontier = steps_to_target_frontier(trials, direction, metric, by=batch_col, ci=ci,
                                            statuses=statuses, objective=objective)
    cbs = critical_batch_size(frontier, batch_col, metric.removesuffix("_to_target"),
                              gns=gns, ci=ci, excess=excess)
    if cbs.points["examples_ratio"].notna().sum() < 3:
        return cbs  # no fit to redo: fit_reason says why; the interval stays NaN
    counts = frontier.loc[frontier[metric.removesuffix("_to_target")] > 0, "n_trials"]
    cbs = replace(cbs, fit_reason=_uneven_note(cbs.fit_reason, counts))
    if resample == "residuals" and math.isfinite(cbs.b_crit_fit):
        kept = cbs.points[cbs.points["examples_ratio"].notna()]
        boot = residual_refits(kept["batch_size"].to_numpy(float),
                               kept["steps"].to_numpy(float), int(n_boot), seed, ci)
        return replace(cbs, b_crit_fit_lower=boot.lower, b_crit_fit_upper=boot.upper,
                       interval="residual bootstrap-t", bootstrap=boot)
    pool = eligible(trials, statuses, "critical_batch_size_bootstrap")
    groups = trial_groups(pool, metric, [batch_col])
    batch = np.array([key[0] for key in groups], dtype=float)
    boot = refit_bootstrap(batch, list(groups.values()), int(n_boot), seed, ci)
    return replace(cbs, b_crit_fit_lower=boot.lower, b_crit_fit_upper=boot.upper,
                   interval="trial bootstrap", bootstrap=boot)


def residual_refits(batch: np.ndarray, steps: np.ndarray, n_boot: int, seed: int,
                    ci: float) -> RefitBootstrap:
    """The studentized residual bootstrap of B_crit fitted to the frontier (``batch``,
    ``steps``, all > 0; ``residual_bootstrap.studentized``) as a ``RefitBootstrap``."""
    lo, hi = math.log(batch.min() / _BOUND), math.log(batch.max() * _BOUND)
    samples, lower, upper = studentized(batch, np.log(steps), n_boot,
                                        np.random.default_rng(seed), ci, lo, hi)
    shares = (float(np.mean(samples == np.inf)), float(np.mean(samples == 0)), 0.0)
    reason = _bootstrap_reason(*shares, lower, upper)
    return RefitBootstrap(samples, n_boot, seed, n_boot, lower, upper,
                          *shares, reason and reason.replace("trial bootstrap", "residual "
                                                             "bootstrap-t", 1))


def _uneven_note(reason: str | None, counts: pd.Series) -> str | None:
    """``reason``, with a note when the batch sizes' numbers of trials ``counts`` differ
    enough (1/n_min - 1/n_max > ``UNEVEN``) to bias the fit: the fastest of n trials sits
    above the best-tuned value by about 1/n of the trials' spread near it (4x more trials at
    the small batch sizes: B_crit -15%, covered 32% of the time). 2 vs 4 trials or 3 vs 8 are
    flagged; 5 or more everywhere never."""
    if not 1 / counts.min() - 1 / counts.max() > UNEVEN:
        return reason
    note = (f"the batch sizes fitted had {counts.min()} to {counts.max()} trials: a minimum "
            "over more trials is lower, which biases B_crit (low when the small batch sizes "
            "had more trials, high when the large ones did) beyond both intervals")
    return f"{reason}; {note}" if reason else note


def refit_bootstrap(batch: np.ndarray, groups: Sequence[np.ndarray], n_boot: int, seed: int,
                    ci: float) -> RefitBootstrap:
    """B_crit refitted to the per-batch-size minima of ``n_boot`` resamples of ``groups``
    (the trials' values at each of ``batch``, inf = never reached)."""
    minima = resampled_minima(groups, n_boot, np.random.default_rng(seed))
    distinct, which = np.unique(minima, axis=0, return_inverse=True)
    fitted = np.array([_refit(batch, row) for row in distinct])
    samples = fitted[which.ravel()] if len(fitted) else np.full(n_boot, math.nan)
    tail = (1 - ci) / 2
    lower = float(np.quantile(np.where(np.isnan(samples), 0.0, samples), tail,
                              method="inverted_cdf"))
    upper = float(np.quantile(np.where(np.isnan(samples), np.inf, samples), 1 - tail,
                              method="inverted_cdf"))
    shares = (float(np.mean(samples == np.inf)), float(np.mean(samples == 0)),
              float(np.mean(np.isnan(samples))))
    return RefitBootstrap(samples, n_boot, seed, len(distinct), lower, upper, *shares,
                          _bootstrap_reason(*shares, lower, upper))


def _refit(batch: np.ndarray, steps: np.ndarray) -> float:
    """B_crit of one resampled frontier: inf / 0 when the fit runs to the top / bottom of its
    range, NaN when fewer than 3 batch sizes have a point or the fit does not converge."""
    usable = (batch > 0) & np.isfinite(steps) & (steps > 0)
    if usable.sum() < 3:
        return math.nan
    fit = _mccandlish_fit(batch[usable], steps[usable], None)
    return {"above": math.inf, "below": 0.0}.get(fit["status"], fit["b_crit"])


def _bootstrap_reason(above: float, below: float, undefined: float, lower: float,
                      upper: float) -> str | None:
    parts = [f"{share:.0%} of resamples {what}" for share, what in (
        (above, "put B_crit above the fit's range (steps still fall as 1/B)"),
        (below, "put it below the smallest batch size (steps do not fall)"),
        (undefined, "had no fit (under 3 batch sizes kept a point, or no convergence), "
                    "counted against both bounds")) if share > 0]
    if not parts:
        return None
    ends = [end for end, unbounded in (("lower", lower == 0), ("upper", upper == math.inf))
            if unbounded]
    return ("trial bootstrap: " + "; ".join(parts)
            + (f": the {' and '.join(ends)} bound{'s are' if len(ends) > 1 else ' is'} "
               "unbounded" if ends else ""))


def _log_steps(batch: np.ndarray, ln_s_min: float, ln_b_crit: float) -> np.ndarray:
    """log S(B) of McCandlish et al. (2018): ln S_min + ln(1 + B_crit / B)."""
    return ln_s_min + np.log1p(np.exp(ln_b_crit) / batch)


def _log_steps_jacobian(batch: np.ndarray, ln_s_min: float, ln_b_crit: float) -> np.ndarray:
    """d log S / d (ln S_min, ln B_crit): 1 and (B_crit / B) / (1 + B_crit / B)."""
    ratio = np.exp(ln_b_crit) / batch
    return np.column_stack([np.ones_like(batch), ratio / (1 + ratio)])


def _mccandlish_fit(b: np.ndarray, s: np.ndarray, ci: float | None) -> dict:
    """The fit of S(B) = S_min (1 + B_crit / B) on log S, with its covariance interval at
    level ``ci`` (none for ``ci=None``) and a status: ok, above, below or failed."""
    nan = {"s_min": math.nan, "b_crit": math.nan, "lower": math.nan, "upper": math.nan,
           "status": "failed"}
    if len(b) < 3:
        return {**nan, "reason": f"{len(b)} batch sizes with steps > 0; the fit needs 3"}
    lo, hi = math.log(b.min() / _BOUND), math.log(b.max() * _BOUND)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(_log_steps, b, np.log(s), p0=_initial_guess(b, s, lo, hi),
                                   jac=_log_steps_jacobian,
                                   bounds=([-np.inf, lo], [np.inf, hi]))
    except (RuntimeError, ValueError) as exc:
        return {**nan, "reason": f"the fit did not converge: {exc}"}
    ln_s_min, ln_b_crit = popt
    if ln_b_crit > hi - 1.0:
        return {**nan, "status": "above",
                "reason": f"steps still fall as 1/B at the largest batch size {b.max():g}: "
                          f"B_crit lies above it and cannot be fitted"}
    if ln_b_crit < lo + 1.0:
        return {**nan, "status": "below",
                "reason": f"steps do not fall with batch size from {b.min():g} on: "
                          f"B_crit lies below it and cannot be fitted"}
    lower = upper = math.nan
    if ci is not None:
        half = stats.t.ppf((1 + ci) / 2, len(b) - 2) * math.sqrt(pcov[1, 1])
        lower, upper = math.exp(ln_b_crit - half), math.exp(ln_b_crit + half)
    reason = None
    if not b.min() <= math.exp(ln_b_crit) <= b.max():
        reason = (f"B_crit {math.exp(ln_b_crit):.4g} lies outside the measured batch sizes "
                  f"[{b.min():g}, {b.max():g}]: an extrapolation")
    return {"s_min": math.exp(ln_s_min), "b_crit": math.exp(ln_b_crit), "lower": lower,
            "upper": upper, "reason": reason, "status": "ok"}


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
