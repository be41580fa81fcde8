"""Paired bootstrap of B_crit across measurements of the same trials (targets, crossing
rules): each resample draws trials once, within each batch size, and every measurement's
frontier is retaken from those same trials, so a ratio of two B_crit carries only the noise
that does not cancel between them.

The resampling is ``critical_batch_size_bootstrap``'s (stratified by batch size, with
replacement, the batch sizes drawn in increasing order from one seeded generator), but it
draws trial positions, not sorted values, so that a trial keeps its identity across the
measurements. Each resampled frontier is fitted by ``scaling.refit_bootstrap`` on groups of
one value (its resample of one value is that value): the same McCandlish refit, with the same
inf (above its range), 0 (below) and NaN (no answer) outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import eligible
from lbt_study.analysis.frontier import reached_values
from lbt_study.analysis.scaling import refit_bootstrap


def paired_refits(measured: Sequence[pd.DataFrame], statuses: Sequence[str] | None,
                  n_boot: int, seed: int, ci: float, metric: str = "steps_to_target",
                  batch_col: str = "batch_size") -> np.ndarray:
    """(measurements, n_boot): B_crit refitted to each measurement's frontier in each
    resample of the trials. ``measured``: the same trials (``trial_id``) measured several
    ways, each with ``reached_target`` and ``metric``."""
    pools = [eligible(m, statuses, "paired_refits").set_index("trial_id") for m in measured]
    ids = pools[0].index
    values = np.stack([reached_values(p.reindex(ids), metric).to_numpy(float) for p in pools])
    batch = pools[0][batch_col].to_numpy(float)
    sizes = np.unique(batch)
    rng = np.random.default_rng(seed)
    minima = np.empty((len(pools), n_boot, len(sizes)))
    for j, size in enumerate(sizes):
        members = np.flatnonzero(batch == size)
        drawn = members[rng.integers(0, len(members), (n_boot, len(members)))]
        minima[:, :, j] = values[:, drawn].min(axis=2)
    return np.stack([_refits(sizes, m, ci) for m in minima])


def _refits(sizes: np.ndarray, minima: np.ndarray, ci: float) -> np.ndarray:
    """B_crit of each row of ``minima`` (one frontier per row), each distinct row once."""
    distinct, which = np.unique(minima, axis=0, return_inverse=True)
    fitted = np.array([refit_bootstrap(sizes, [np.array([v]) for v in row], 1, 0, ci).samples[0]
                       for row in distinct])
    return fitted[which.ravel()]


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray,
                   ci: float) -> tuple[float, float, float]:
    """The ``ci`` percentile interval of numerator / denominator over paired draws (inf /
    finite is inf, 0 / finite is 0), and the share of draws without a ratio (a NaN in
    either, inf / inf, 0 / 0, anything / 0), which counts as 0 for the lower end and inf for
    the upper, as ``refit_bootstrap`` counts a refit without an answer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    ratio = np.where(denominator == 0, math.nan, ratio)
    undefined = np.isnan(ratio)
    tail = (1 - ci) / 2
    lower = float(np.quantile(np.where(undefined, 0.0, ratio), tail, method="inverted_cdf"))
    upper = float(np.quantile(np.where(undefined, np.inf, ratio), 1 - tail,
                              method="inverted_cdf"))
    return lower, upper, float(undefined.mean())
