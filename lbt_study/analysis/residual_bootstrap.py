"""A studentized residual bootstrap of the McCandlish fit's B_crit, all resamples at once.

The model on log steps is y_B = a + log(1 + exp(c) / B) with c = ln B_crit. For a fixed c
the intercept a is the mean of y - log(1 + exp(c) / B), so the least-squares c minimises a
function of c alone (the profile residual sum of squares); ``profile_fits`` finds it for many
rows of y together, on a grid over the fit's range and then a finer grid about the best
point (0.004 in c), the minimum then taken on the parabola through the best three. Its
standard error is that of the linearised fit:
s / sqrt(sum (g_B - mean g)^2), g_B = B_crit / (B + B_crit) the derivative of y_B in c,
s^2 = RSS / (n - 2).

``studentized`` is the bootstrap-t interval (Efron & Tibshirani 1993, ch. 12; Davison &
Hinkley 1997, section 6.3): the frontier's residuals about the fitted curve, divided by
sqrt(1 - h_BB) (leverage of the linearised design) and centred, are resampled with replacement
onto the fitted curve, each resample refitted, and t* = (c* - c) / se* taken; the interval is
c - q(1 - a/2) se .. c - q(a/2) se. Why the residuals and not the trials: the frontier point of
a batch size is the fastest of its trials, and a resample of n trials keeps that same fastest
trial with probability 1 - (1 - 1/n)^n (67% at n = 5), so resampling trials understates how
much the frontier point would move in a new study (the bootstrap of a minimum is
inconsistent); and in a per-batch-size study the trials are the same quasi-random points at
every batch size, not independent draws. The residuals about the curve measure the frontier
points' noise as it shows in the data. Studentizing gives the t quantiles a 7-point fit needs
(t(0.975, 5) = 2.57 against 1.96), which a percentile interval of the same resamples lacks.
"""

from __future__ import annotations

import math

import numpy as np

GRID = 0.1  # the coarse grid's step in c = ln B_crit
FINE = 0.004  # the fine grid's step about the coarse minimum
EDGE = 1.0  # a fit within this of an end of its range has run to that end (as curve_fit's)


def _profile_rss(batch: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The profile RSS of each row of ``y`` (rows, n) at each of its ``c`` (rows, k)."""
    f = np.log1p(np.exp(c)[..., None] / batch)  # rows, k, n
    f = f - f.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    return ((yc[:, None, :] - f) ** 2).sum(-1)


def profile_fits(batch: np.ndarray, y: np.ndarray, lo: float,
                 hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(c, rss) of the least-squares fit of each row of ``y`` (log steps at ``batch``), c in
    [lo, hi]: the coarse grid by one matrix product, then a fine grid about its minimum."""
    grid = np.append(np.arange(lo, hi, GRID), hi)
    f = np.log1p(np.exp(grid)[:, None] / batch)
    f = f - f.mean(1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    rss = (yc ** 2).sum(1)[:, None] - 2 * np.einsum("ij,kj->ik", yc, f) + (f ** 2).sum(1)
    coarse = grid[np.argmin(rss, axis=1)]
    steps = np.arange(-GRID, GRID + FINE / 2, FINE)
    fine = np.clip(coarse[:, None] + steps[None, :], lo, hi)
    fine_rss = _profile_rss(batch, y, fine)
    best = np.clip(np.argmin(fine_rss, axis=1), 1, steps.size - 2)
    rows = np.arange(len(y))
    c = _parabola_step(*(fine_rss[rows, best + k] for k in (-1, 0, 1)), fine[rows, best], FINE)
    h = FINE / 16  # once more on a closer parabola: c to about 1e-8
    close = _profile_rss(batch, y, np.clip(c[:, None] + np.array([-h, 0.0, h]), lo, hi))
    c = np.clip(_parabola_step(close[:, 0], close[:, 1], close[:, 2], c, h), lo, hi)
    return c, np.maximum(_profile_rss(batch, y, c[:, None])[:, 0], 0.0)


def _parabola_step(left: np.ndarray, mid: np.ndarray, right: np.ndarray, at: np.ndarray,
                   h: float) -> np.ndarray:
    """The vertex of the parabola through (at - h, left), (at, mid), (at + h, right), kept
    within h of ``at`` (``at`` itself where the three are not convex)."""
    curve = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curve > 0, 0.5 * (left - right) / curve, 0.0)
    return at + np.clip(shift, -1, 1) * h


def standard_error(batch: np.ndarray, c: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """The linearised standard error of each fit's c (see the module docstring)."""
    g = 1 / (1 + batch / np.exp(c)[..., None])
    spread = ((g - g.mean(-1, keepdims=True)) ** 2).sum(-1)
    return np.sqrt(rss / (batch.size - 2) / spread)


def _modified_residuals(batch: np.ndarray, c: float, residuals: np.ndarray) -> np.ndarray:
    """Residuals / sqrt(1 - leverage) of the linearised fit (design [1, g_B]), centred."""
    g = 1 / (1 + batch / math.exp(c))
    design = np.column_stack([np.ones_like(g), g])
    hat = np.einsum("ij,jk,ik->i", design, np.linalg.pinv(design.T @ design), design)
    out = residuals / np.sqrt(np.clip(1 - hat, 1e-6, None))
    return out - out.mean()


def studentized(batch: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator,
                ci: float, lo: float, hi: float) -> tuple[np.ndarray, float, float]:
    """(the resamples' B_crit, lower, upper): the ``ci`` bootstrap-t interval of B_crit fitted
    to ``y`` (log steps) at ``batch`` (the fit by ``profile_fits`` too, so that an exact
    frontier's resamples return its c exactly). A resample whose fit runs to the top (bottom)
    of [lo, hi] has B_crit inf (0) and no finite t*; it is counted as t* = -inf (+inf), so
    that when their share passes (1 - ci) / 2 the end they point to, upper (lower), is
    unbounded, as in the percentile interval of the trial bootstrap."""
    fit_c, fit_rss = profile_fits(batch, y[None, :], lo, hi)
    c, se = float(fit_c[0]), float(standard_error(batch, fit_c, fit_rss)[0])
    f = np.log1p(math.exp(c) / batch)
    fitted = f + (y - f).mean()
    residuals = _modified_residuals(batch, c, y - fitted)
    draws = fitted + residuals[rng.integers(0, batch.size, (n_boot, batch.size))]
    c_star, rss_star = profile_fits(batch, draws, lo, hi)
    se_star = standard_error(batch, c_star, rss_star)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(se_star > 0, (c_star - c) / se_star,
                          np.sign(c_star - c) * np.inf)
    t_star = np.nan_to_num(t_star, nan=0.0)  # se* = 0 and c* = c: an exact resample
    above, below = c_star > hi - EDGE, c_star < lo + EDGE
    t_star[above], t_star[below] = -np.inf, np.inf  # the end each points to is unbounded
    samples = np.exp(c_star)
    samples[above], samples[below] = math.inf, 0.0
    tail = (1 - ci) / 2
    q_low, q_high = np.quantile(t_star, [tail, 1 - tail], method="inverted_cdf")
    lower = 0.0 if q_high == math.inf else math.exp(c - q_high * se)
    upper = math.inf if q_low == -math.inf else math.exp(c - q_low * se)
    return samples, lower, upper
