"""How far the weights travel: Hoffer et al. (2017), "Train longer, generalize better", model
training as a random walk on a random potential, in which the distance from initialisation
grows like log(steps): ||w_t - w_0|| ~ a + b log t, and a larger batch (fewer steps) ends
closer to the start, which their "steps" budget undoes.

``diffusion_fit`` fits that line to each trial's evaluations (history ``weight_distance``
against log ``step``, steps >= 1, by ``scipy.stats.linregress``) and summarises the slope per
batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lbt_study.analysis._checks import eligible, require

COLUMNS = ("batch_size", "n_trials", "slope_median", "slope_min", "slope_max",
           "r_squared_median", "distance_final_median")


def trial_diffusion(history: pd.DataFrame) -> pd.DataFrame:
    """Per trial with 3 or more evaluations at step >= 1: the fit of weight_distance = a +
    b ln(step): trial_id, slope (b), intercept (a), r_squared, n_evaluations, distance_final
    (at its last evaluation)."""
    require(history, ["trial_id", "step", "weight_distance"], "trial_diffusion", "history")
    rows = []
    scored = history[(history["step"] >= 1) & history["weight_distance"].notna()]
    for tid, part in scored.sort_values("step").groupby("trial_id", sort=False):
        if part["step"].nunique() < 3:
            continue
        fit = stats.linregress(np.log(part["step"].astype(float)),
                               part["weight_distance"].astype(float))
        rows.append({"trial_id": tid, "slope": fit.slope, "intercept": fit.intercept,
                     "r_squared": fit.rvalue ** 2, "n_evaluations": len(part),
                     "distance_final": float(part["weight_distance"].iloc[-1])})
    return pd.DataFrame(rows, columns=["trial_id", "slope", "intercept", "r_squared",
                                       "n_evaluations", "distance_final"])


def diffusion_fit(trials: pd.DataFrame, history: pd.DataFrame,
                  statuses: Sequence[str] | None = ("ok",)) -> pd.DataFrame:
    """Per batch size (trials with status in ``statuses``): how many trials were fitted, the
    median, smallest and largest slope b of ||w - w_0|| = a + b ln(step), the median R^2,
    and the median distance at the last evaluation."""
    require(trials, ["trial_id", "batch_size"], "diffusion_fit")
    pool = eligible(trials, statuses, "diffusion_fit")[["trial_id", "batch_size"]]
    fits = trial_diffusion(history).merge(pool, on="trial_id")
    grouped = fits.groupby("batch_size", sort=True)
    out = pd.DataFrame({
        "n_trials": grouped.size(), "slope_median": grouped["slope"].median(),
        "slope_min": grouped["slope"].min(), "slope_max": grouped["slope"].max(),
        "r_squared_median": grouped["r_squared"].median(),
        "distance_final_median": grouped["distance_final"].median(),
    }).reset_index()
    return out[list(COLUMNS)]
