"""How the tuned learning rate (and warmup) moves with batch size: lr ~ B^k.

Goyal et al. (2017) scale the learning rate linearly with the batch size (k = 1) and keep a
fixed warmup in epochs; Hoffer et al. (2017) argue for the square-root rule (k = 0.5). The
learning rate that goes with a batch size is where the objective peaks against log(lr), not
the lr of the luckiest of a few noisy trials.

``lr_scaling`` fits the objective against x = log(lr), over the trials within ``window``
decades (default 2) of the best trial's lr at their batch size:

- **Per batch size** (the points): a quadratic in x by least squares; its vertex is the tuned
  lr at that B, with Fieller's interval (every vertex the fit does not reject at level
  ``ci``). A quadratic with no peak (curved the wrong way for the direction) or a vertex
  outside the lrs tried at that B is flagged ``edge`` and falls back to the best trial's lr,
  a bound on the optimum rather than an estimate; fewer than 3 distinct lrs give NaN.
- **The exponent**: one model of all trials with a curvature and an offset per batch size and
  one optimum line, objective = c_B + q_B (x - a - k log B)^2, fitted by profile least
  squares (``lr_profile``); a batch size with fewer than 3 distinct lrs is left out of it.
  Its ``r_squared`` is the share of the objective's variance within batch sizes it explains.
- **Its interval**: the profile likelihood interval of k (equal Gaussian noise assumed; an
  end that reaches the k range searched, -3 to 3, is unbounded). On planted parabolas of the
  default design with the curvature growing 150x across batch sizes it covers the true k in
  95.0% of 400 studies; the shared-curvature fit it replaces averaged 0.82 for a true 0.5
  there (tests/test_analysis_lr_profile.py).
- **The shared curvature tested**: ``curvature_f`` and ``curvature_p`` are the F test of one
  curvature for all batch sizes against one per batch size, and ``exponent_shared_curvature``
  the k that shared fit would give; where the test rejects at level 1 - ``ci`` the reason
  says that fit would be biased. The free fit is used either way.

Where the model cannot be fitted (too few trials, no variation of lr within batch sizes, no
peak), k falls back to a least-squares power law through the best trial of each batch size
(t interval, ``r_squared`` of log lr), and ``method`` and ``reason`` say so.

Warmup takes that power law through the best trial's warmup, except where the design ties
warmup to the learning rate (``warmup_tied``: each warmup value goes with one learning-rate
choice, as a quasi-random design with the same points at every batch size does): there the
best trial's warmup only mirrors which learning rate won, and no exponent is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    missing_columns,
    require,
)
from lbt_study.analysis.lr_profile import (
    K_RANGE,
    curvature_test,
    profile_fit,
    shared_curvature_fit,
)

RULES = {"linear_rule_in_ci": 1.0, "sqrt_rule_in_ci": 0.5, "constant_in_ci": 0.0}
PROFILE = "free_curvature_profile"  # the exponent from the free-curvature model of every trial
BEST_FIT = "best_trial_power_fit"  # a power law through the best trial of each batch size
LN10 = math.log(10)
WINDOW = 2.0  # decades of lr either side of the best trial that enter the fits
LR_CHOICE = ("base_lr", "learning_rate")  # the searched lr column, for the warmup tie


@dataclass(frozen=True, eq=False)
class LRScaling:
    """Fits of hyperparameters against batch size, and the per-batch-size points.

    fits: one row per group of ``by`` and hyperparameter (the learning rate, then warmup):
    the ``by`` keys, ``parameter``, ``method`` (``free_curvature_profile`` or
    ``best_trial_power_fit``), ``exponent`` (k), ``exponent_lower``, ``exponent_upper`` (the
    interval at level ``ci``; -inf / inf: unbounded), ``coefficient`` (the fitted value at
    B = 1), ``r_squared``, ``n_points`` (batch sizes), ``n_trials`` (trials in the fit),
    ``exponent_shared_curvature``, ``curvature_f`` and ``curvature_p`` (the shared-curvature
    fit's k and the F test of a shared curvature; NaN for the power law),
    ``linear_rule_in_ci`` (k = 1, Goyal et al. 2017), ``sqrt_rule_in_ci`` (k = 0.5, Hoffer et
    al. 2017), ``constant_in_ci`` (k = 0; missing where the interval is NaN) and ``reason``
    (missing, or why a value is NaN, what was left out, which fallback was taken).
    metric, direction: what the parabolas were fitted to, and which way is better.
    points: one row per group and batch size with a usable trial: the ``by`` keys, the batch
    size, ``n_trials``, ``lr_min``/``lr_max`` (the lrs tried), the best trial's ``trial_id``,
    lr, warmup and objective, ``lr_opt`` with ``lr_opt_lower``/``lr_opt_upper``, ``method``
    (``vertex``, ``best_trial`` or missing), ``edge`` and ``reason``.
    """

    fits: pd.DataFrame
    points: pd.DataFrame
    ci: float
    metric: str = "final_objective"
    direction: str = "maximize"


def lr_scaling(
    trials: pd.DataFrame,
    direction: str,
    metric: str = "final_objective",
    lr_col: str = "learning_rate",
    warmup_col: str | None = "warmup_epochs",
    batch_col: str = "batch_size",
    by: str | Sequence[str] = (),
    ci: float = 0.95,
    window: float | None = WINDOW,
    statuses: Sequence[str] | None = ("ok",),
) -> LRScaling:
    """The exponent k of lr_opt ~ B^k from a quadratic fit of ``metric`` against log(lr).

    Trials count with status in ``statuses``, ``metric`` not NaN and lr and B > 0 (the
    others are counted in the reason); ``metric`` is maximised or minimised as
    ``direction`` says. ``window``: only the trials whose lr lies within that many decades
    of the best trial's lr at their batch size enter the fits (default 2, a factor of 100
    either way: far off, a real objective has flattened or collapsed and no parabola
    describes it); None fits all. The per-B vertices, the free-curvature model for k and
    its profile interval are described in the module docstring. ``by`` (e.g. ``("norm",)``)
    fits each group on its own. Warmup (``warmup_col``) takes the power-law fit of the best
    trial's value per batch size (``best_trial_power_fit``, t interval), trials without
    warmup left out, unless the design ties warmup to the lr (``warmup_tied``).
    """
    check_direction(direction)
    check_fraction(ci, "ci")
    if window is not None:
        check_positive(window, "window")
    by = as_list(by)
    require(trials, [*by, batch_col, lr_col, metric], "lr_scaling")
    setup = _Setup(metric, lr_col, warmup_col if warmup_col in trials.columns else None,
                   batch_col, direction, ci, window)
    pool = _pool(trials, setup, statuses)
    fits, points = [], []
    for key, part in _by_groups(trials, pool, by):
        rows, shown = _group_scaling(part, setup)
        if warmup_col is not None and setup.warmup is None:
            rows.append(_no_fit(warmup_col, BEST_FIT, 0, 0,
                                missing_columns(trials, [warmup_col], "trials")))
        fits.extend({**key, **row} for row in rows)
        points.append(shown.assign(**key)[[*by, *shown.columns]])
    frame = pd.DataFrame(fits, columns=[*by, *_no_fit("", "", 0, 0, None)])
    for column in RULES:
        frame[column] = frame[column].astype("boolean")
    shown = pd.concat(points, ignore_index=True) if points else pd.DataFrame()
    return LRScaling(fits=frame, points=shown, ci=ci, metric=metric, direction=direction)


@dataclass(frozen=True)
class _Setup:
    """The columns and settings of one ``lr_scaling`` call."""

    metric: str
    lr: str
    warmup: str | None  # None: no warmup fit (not asked, or no such column)
    batch: str
    direction: str
    ci: float
    window: float | None


def _pool(trials: pd.DataFrame, s: _Setup, statuses: Sequence[str] | None) -> pd.DataFrame:
    """The trials with a ``metric`` value and status in ``statuses``: _usable (lr and B > 0),
    _x = log(lr), _u = log(B), _y = the objective to maximise (negated for "minimize")."""
    pool = eligible(trials, statuses, "lr_scaling")
    y, lr, batch = floats(pool[s.metric]), floats(pool[s.lr]), floats(pool[s.batch])
    scored = np.isfinite(y)
    usable = (lr > 0) & (batch > 0)
    sign = 1.0 if s.direction == "maximize" else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return pool[scored].assign(_usable=usable[scored], _x=np.log(lr[scored]),
                                   _u=np.log(batch[scored]), _y=sign * y[scored])


def _by_groups(trials: pd.DataFrame, pool: pd.DataFrame,
               by: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(key, the pool's trials of that group) for every group of ``by`` in ``trials``."""
    if not by:
        return [({}, pool)]
    keys = trials[by].drop_duplicates().sort_values(by, kind="stable")
    groups = []
    for key in keys.itertuples(index=False):
        mask = np.ones(len(pool), dtype=bool)
        for column, value in zip(by, key, strict=True):
            mask &= (pool[column].isna() if pd.isna(value) else pool[column].eq(value)).to_numpy()
        groups.append((dict(zip(by, key, strict=True)), pool[mask]))
    return groups


def _group_scaling(pool: pd.DataFrame, s: _Setup) -> tuple[list[dict], pd.DataFrame]:
    """The fits (lr, then warmup) and the points of one group's trials."""
    unusable = int((~pool["_usable"]).sum())
    pool = pool[pool["_usable"]]
    codes = pd.factorize(pool[s.batch], sort=True)[0]
    x, y = pool["_x"].to_numpy(), pool["_y"].to_numpy()
    kept = _windowed(codes, x, y, np.ones((1, len(pool))), s.window)[0] > 0
    points = _points(pool[kept], s)
    edges = points.loc[points["edge"].eq(True), s.batch].tolist()
    notes = [unusable and f"{unusable} trials with a {s.metric} left out ({s.lr} or "
             f"{s.batch} missing or not > 0)",
             (~kept).sum() and f"{(~kept).sum()} trials more than {s.window:g} decades of lr "
             "from the best trial of their batch size left out",
             edges and (f"optimum at the edge of the lrs tried at {s.batch} "
                        f"{', '.join(f'{b:g}' for b in edges)}")]
    row = _free_fit(pool, codes, s)
    fallback = _power_fit(points, s.batch, s.lr, s.ci)
    outside = _peaks_outside(pool, row, s.batch)
    if 2 * len(outside) > len(points):  # an extrapolation is no measurement of k
        row = {**_no_fit(s.lr, PROFILE, row["n_points"], row["n_trials"], None), "reason": (
            f"the fit (k = {row['exponent']:.3g}) puts the optimum outside the lrs "
            f"tried at {s.batch} {', '.join(f'{b:g}' for b in outside)}: k would be an "
            "extrapolation and is not given; search a range holding every optimum")}
    elif (math.isnan(row["exponent"]) and math.isnan(row["exponent_lower"])
          and not math.isnan(fallback["exponent"])):
        why = f"{row['reason']}: k from the best trial of each batch size instead"
        row = {**fallback, "reason": _join(why, fallback["reason"])}
    row["reason"] = _join(notes[0], notes[1], row["reason"], notes[2])
    rows = [row]
    if s.warmup is not None:
        tied = warmup_tied(pool[kept], s.warmup, s.batch)
        rows.append(_no_fit(s.warmup, BEST_FIT, len(points), int(kept.sum()), tied) if tied
                    else _power_fit(points, s.batch, s.warmup, s.ci))
    return rows, points


def warmup_tied(trials: pd.DataFrame, warmup: str, batch: str) -> str | None:
    """Why the design ties ``warmup`` to the learning rate, or None: every warmup value
    goes with one value of the searched lr (``base_lr`` where the table has it, else the
    learning rate) and some warmup value recurs at two or more batch sizes, as the same
    quasi-random points at every batch size give. The best trial's warmup then follows
    from which lr won, and its exponent is the lr's, not the warmup's."""
    choice = next((c for c in LR_CHOICE if c in trials.columns), None)
    values = trials[[batch, warmup, *([choice] if choice else [])]].dropna()
    if choice is None or values.empty or values[warmup].nunique() < 2:
        return None
    per_value = values.groupby(warmup)
    if not (per_value[choice].nunique() == 1).all() or not (per_value[batch].nunique() > 1).any():
        return None
    return (f"no exponent: the design ties {warmup} to {choice} (each of the "
            f"{values[warmup].nunique()} {warmup} values goes with one {choice}, the same "
            f"pairs at every {batch}), so the best trial's {warmup} only mirrors which "
            f"{choice} won; search them independently (a grid, or separate draws per "
            f"{batch}) to measure how warmup scales")


def _peaks_outside(pool: pd.DataFrame, row: dict, batch: str) -> list[float]:
    """The batch sizes where the fit's optimum, coefficient x B^k, lies outside the lrs
    tried there (none when the fit gave no k)."""
    if row["method"] != PROFILE or not math.isfinite(row["exponent"]):
        return []
    tried = pool.groupby(batch)["_x"].agg(["min", "max"])
    peak = np.log(row["coefficient"]) + row["exponent"] * np.log(tried.index.to_numpy(float))
    off = (peak < tried["min"] - 1e-9) | (peak > tried["max"] + 1e-9)
    return tried.index[off.to_numpy()].tolist()


def _windowed(codes: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray,
              window: float | None) -> np.ndarray:
    """``weights`` (resamples x trials) with 0 for every trial farther than ``window``
    decades of lr from the best trial drawn at its batch size (unchanged for None)."""
    if window is None:
        return weights
    out = weights.copy()
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        drawn = np.where(weights[:, members] > 0, y[members], -np.inf)
        best_x = x[members][np.argmax(drawn, axis=1)]
        out[:, members] *= np.abs(x[members][None, :] - best_x[:, None]) <= window * LN10
    return out


def _points(pool: pd.DataFrame, s: _Setup) -> pd.DataFrame:
    """One row per batch size: the best trial, the lrs tried and the vertex of the fit."""
    extra = [c for c in ("trial_id", s.lr, s.warmup, s.metric)
             if c is not None and c in pool.columns]
    rows = []
    for batch, part in pool.groupby(s.batch, sort=True):
        best = part.loc[part["_y"].idxmax()]
        x, y = part["_x"].to_numpy(), part["_y"].to_numpy()
        rows.append({s.batch: batch, "n_trials": len(part), "lr_min": math.exp(x.min()),
                     "lr_max": math.exp(x.max()), **{c: best[c] for c in extra},
                     **_vertex(x, y, float(best["_x"]), s.ci, s.direction)})
    columns = [s.batch, "n_trials", "lr_min", "lr_max", *extra, "lr_opt", "lr_opt_lower",
               "lr_opt_upper", "method", "edge", "reason"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["edge"] = frame["edge"].astype("boolean")
    return frame


def _vertex(x: np.ndarray, y: np.ndarray, best_x: float, ci: float, direction: str) -> dict:
    """The vertex of a quadratic in x = log(lr) fitted to y (to maximise), as lr values."""
    out = {"lr_opt": math.nan, "lr_opt_lower": math.nan, "lr_opt_upper": math.nan,
           "method": None, "edge": pd.NA, "reason": None}
    distinct = len(np.unique(x))
    if distinct < 3:
        rates = "learning rate" if distinct == 1 else "learning rates"
        return {**out, "reason": f"{distinct} distinct {rates}; a vertex needs 3"}
    mid = float(x.mean())
    design = np.vander(x - mid, 3, increasing=True)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    fallback = {**out, "lr_opt": math.exp(best_x), "method": "best_trial", "edge": True}
    if not coef[2] < 0:
        shape = "concave-down" if direction == "maximize" else "convex"
        return {**fallback, "reason": f"the quadratic is not {shape} (no optimum inside): "
                "the best trial's lr is shown"}
    vertex = mid - coef[1] / (2 * coef[2])
    if not x.min() <= vertex <= x.max():
        side = "above the largest" if vertex > x.max() else "below the smallest"
        return {**fallback, "reason": f"the vertex ({_lr(vertex):.3g}) lies {side} lr "
                "tried: the best trial's lr is shown (a bound on the optimum)"}
    lower, upper, why = _fieller(design, y, coef, ci)
    return {**out, "lr_opt": _lr(vertex), "lr_opt_lower": _lr(mid + lower),
            "lr_opt_upper": _lr(mid + upper), "method": "vertex", "edge": False, "reason": why}


def _lr(log_lr: float) -> float:
    """exp(log_lr), inf past the float range (a barely bounded interval can reach it)."""
    with np.errstate(over="ignore"):
        return float(np.exp(log_lr))


def _fieller(design: np.ndarray, y: np.ndarray, coef: np.ndarray,
             ci: float) -> tuple[float, float, str | None]:
    """Fieller's interval for the vertex -c1 / (2 c2) of y = c0 + c1 x + c2 x^2.

    The vertices v with (c1 + 2 c2 v)^2 <= t^2 Var(c1 + 2 c2 v): bounded only when c2 is
    clearly nonzero at level ``ci``; otherwise NaN and why.
    """
    df = len(y) - 3
    if df < 1:
        return math.nan, math.nan, "3 trials: the quadratic is exact, no interval (needs 4)"
    resid = y - design @ coef
    cov = float(resid @ resid) / df * np.linalg.inv(design.T @ design)
    t2 = stats.t.ppf((1 + ci) / 2, df) ** 2
    _, c1, c2 = coef
    a = 4 * (c2 * c2 - t2 * cov[2, 2])
    b = 4 * (c1 * c2 - t2 * cov[1, 2])
    c = c1 * c1 - t2 * cov[1, 1]
    if not a > 0:
        return math.nan, math.nan, "the curvature is not clearly nonzero: no bounded interval"
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - root) / (2 * a), (-b + root) / (2 * a), None


def _free_fit(pool: pd.DataFrame, codes: np.ndarray, s: _Setup) -> dict:
    """k of the free-curvature model over the windowed trials (``lr_profile``), its profile
    interval, and the F test of a shared curvature."""
    kept = _windowed(codes, pool["_x"].to_numpy(), pool["_y"].to_numpy(),
                     np.ones((1, len(pool))), s.window)[0] > 0
    part = pool[kept]
    distinct = part.groupby(s.batch)["_x"].nunique()
    few = distinct.index[distinct < 3].tolist()
    part = part[part[s.batch].isin(distinct.index[distinct >= 3])]
    n, groups = len(part), part[s.batch].nunique()
    row = _no_fit(s.lr, PROFILE, groups, n, None)
    thin = few and (f"{s.batch} {', '.join(f'{b:g}' for b in few)} left out of the fit of k "
                    "(fewer than 3 distinct learning rates: no curvature of their own)")
    if groups < 2:
        return {**row, "reason": _join(thin, f"{groups} batch sizes to fit; k needs 2")}
    if n < 2 * groups + 3:
        return {**row, "reason": _join(thin, f"{n} trials at {groups} batch sizes: the fit "
                f"needs {2 * groups + 3} (an offset and a curvature per batch size, the "
                "optimum line's 2 coefficients, 1 spare)")}
    c = pd.factorize(part[s.batch], sort=True)[0]
    x0, u0 = float(part["_x"].mean()), float(part["_u"].mean())
    x, u, y = part["_x"].to_numpy() - x0, part["_u"].to_numpy() - u0, part["_y"].to_numpy()
    fit = profile_fit(c, x, u, y, s.ci)
    if not (fit.curvatures < 0).any():
        shape = "concave-down" if s.direction == "maximize" else "convex"
        return {**row, "reason": _join(thin, f"no batch size's trials are {shape} in log(lr) "
                                       "(no optimum)")}
    shared_k, _, shared_rss = shared_curvature_fit(c, x, u, y)
    f, p = curvature_test(shared_rss, fit.rss, groups, n)
    row.update(exponent_shared_curvature=shared_k, curvature_f=f, curvature_p=p)
    if min(abs(fit.k - end) for end in K_RANGE) < 1e-6:
        return {**row, "exponent_lower": -math.inf, "exponent_upper": math.inf,
                **dict.fromkeys(RULES, True), "reason": _join(thin, (
                    f"the best fit runs to the edge of the exponents searched ({K_RANGE[0]:g} "
                    f"to {K_RANGE[1]:g}): no estimate of k, and its interval is unbounded"))}
    row.update(exponent=fit.k, exponent_lower=fit.lower, exponent_upper=fit.upper,
               coefficient=_lr(x0 + fit.a - fit.k * u0),
               r_squared=1 - fit.rss / fit.total if fit.total > 0 else math.nan)
    if not math.isnan(fit.lower):
        row.update({name: bool(fit.lower <= rule <= fit.upper) for name, rule in RULES.items()})
    differs = p < 1 - s.ci and (
        f"the curvature differs across batch sizes (F = {f:.3g}, p = {p:.2g}): one shared "
        f"curvature does not describe these trials, and its k ({shared_k:.3g}) would be biased")
    return {**row, "reason": _join(thin, differs)}


def _no_fit(parameter: str, method: str, n_points: int, n_trials: int,
            reason: str | None) -> dict:
    """A row of ``LRScaling.fits`` with every value NaN and the reason."""
    return {"parameter": parameter, "method": method, "exponent": math.nan,
            "exponent_lower": math.nan, "exponent_upper": math.nan, "coefficient": math.nan,
            "r_squared": math.nan, "n_points": n_points, "n_trials": n_trials,
            "exponent_shared_curvature": math.nan, "curvature_f": math.nan,
            "curvature_p": math.nan,
            **dict.fromkeys(RULES, pd.NA), "reason": reason}


def _power_fit(points: pd.DataFrame, x_col: str, y_col: str, ci: float) -> dict:
    """OLS fit of log(y) = a + k log(x) over the best trials, as one row of the fits."""
    x, y = floats(points[x_col]), floats(points[y_col])
    keep = (x > 0) & (y > 0)
    left_out = int((~keep).sum())
    note = (f"{left_out} of {len(points)} best trials left out ({y_col} or {x_col} missing "
            "or not > 0)" if left_out else None)
    lx, ly = np.log(x[keep].to_numpy()), np.log(y[keep].to_numpy())
    row = _no_fit(y_col, BEST_FIT, len(lx), len(lx), note)
    if len(lx) < 2:
        return {**row, "reason": _join(note, f"{len(lx)} batch sizes to fit; k needs 2")}
    fit = stats.linregress(lx, ly)
    row.update(exponent=fit.slope, coefficient=math.exp(fit.intercept),
               r_squared=fit.rvalue**2)
    if len(lx) < 3:
        return {**row, "reason": _join(note, "2 batch sizes: k is exact, no interval (needs 3)")}
    half = stats.t.ppf((1 + ci) / 2, len(lx) - 2) * fit.stderr
    lower, upper = fit.slope - half, fit.slope + half
    row.update(exponent_lower=lower, exponent_upper=upper)
    row.update({name: bool(lower <= k <= upper) for name, k in RULES.items()})
    return row


def _join(*parts: object) -> str | None:
    """The parts that say something (not None, 0 or empty), joined by "; "."""
    return "; ".join(str(p) for p in parts if p) or None
