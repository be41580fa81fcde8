"""The diffusion fit (Hoffer et al. 2017): ||w - w_0|| = a + b ln(step), per trial and per
batch size, on literal histories whose lines are known."""

import math

import pandas as pd
import pytest

from lbt_study.analysis.diffusion import diffusion_fit, trial_diffusion


def history(slopes: dict[str, float], steps=(0, 1, 2, 4, 8, 16, 32)) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": tid, "step": s,
                          "weight_distance": 0.0 if s == 0 else 0.5 + b * math.log(s)}
                         for tid, b in slopes.items() for s in steps])


def test_each_trials_line_is_recovered_and_step_zero_is_left_out():
    fits = trial_diffusion(history({"a": 0.3, "b": 1.2})).set_index("trial_id")
    assert fits.loc["a", "slope"] == pytest.approx(0.3)
    assert fits.loc["b", "intercept"] == pytest.approx(0.5)  # step 0 (distance 0) not fitted
    assert fits.loc["b", "r_squared"] == pytest.approx(1.0)
    assert fits.loc["a", "n_evaluations"] == 6
    assert fits.loc["b", "distance_final"] == pytest.approx(0.5 + 1.2 * math.log(32))


def test_per_batch_size_median_slope_over_ok_trials():
    h = history({"a": 0.3, "b": 0.5, "c": 0.9, "d": 2.0, "e": 7.0})
    trials = pd.DataFrame({"trial_id": list("abcde"), "batch_size": [16, 16, 16, 64, 64],
                           "status": ["ok", "ok", "ok", "ok", "diverged"]})
    got = diffusion_fit(trials, h).set_index("batch_size")
    assert got.loc[16, "slope_median"] == pytest.approx(0.5)  # the mean would be 0.567
    assert (got.loc[16, "slope_min"], got.loc[16, "slope_max"]) == pytest.approx((0.3, 0.9))
    assert got.loc[64, "n_trials"] == 1 and got.loc[64, "slope_median"] == pytest.approx(2.0)
    few = history({"a": 1.0}, steps=(0, 1, 2))
    assert trial_diffusion(few).empty  # two evaluations past step 0: no line
    assert diffusion_fit(trials, few).empty
