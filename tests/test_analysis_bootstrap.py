"""critical_batch_size_bootstrap on planted McCandlish curves: B_crit recovered, its bootstrap
interval (the residual bootstrap-t by default, the trial bootstrap with resample="trials")
covering the planted value, and the edges counted. Coverage over many planted studies of the
default design is in tests/test_coverage.py.

The plant: S(B) = 1000 (1 + B_crit / B) at B = 16 ... 1024, five trials per batch size whose
steps to target are S(B) exp(|e|), e ~ N(0, 0.2): one-sided noise, no trial is faster than the
best-tuned curve (a trial is a worse-tuned run, never a better one). The frontier point (the
fastest of five) then sits above S(B) by a factor that is alike at every B, which moves S_min,
not B_crit: the planted B_crit is the value to recover.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis import critical_batch_size_bootstrap

POWERS = 2 ** np.arange(4, 11)  # 16 .. 1024


def planted(b_crit: float, seed: int, per_batch: int = 5, sigma: float = 0.2,
            batch: np.ndarray = POWERS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = 1000 * (1 + b_crit / batch[:, None]) * np.exp(
        np.abs(rng.normal(0, sigma, (len(batch), per_batch))))
    return pd.DataFrame({
        "trial_id": [f"b{b}-{i}" for b in batch for i in range(per_batch)],
        "status": "ok", "batch_size": np.repeat(batch, per_batch), "final_objective": 0.9,
        "reached_target": True, "steps_to_target": steps.ravel(),
    })


@pytest.mark.parametrize("b_crit", [60, 200, 500])
def test_planted_b_crit_recovered_within_10_percent_and_covered(b_crit):
    got = critical_batch_size_bootstrap(planted(b_crit, seed=0), "maximize")
    assert got.b_crit_fit == pytest.approx(b_crit, rel=0.10)
    assert got.interval == "residual bootstrap-t"
    assert got.b_crit_fit_lower < b_crit < got.b_crit_fit_upper
    assert got.b_crit_fit_lower < got.b_crit_fit < got.b_crit_fit_upper
    boot = got.bootstrap
    assert (boot.n_boot, boot.seed, len(boot.samples), boot.n_fits) == (1000, 0, 1000, 1000)
    assert (boot.frac_above, boot.frac_below, boot.frac_undefined) == (0, 0, 0)
    assert boot.reason is None and got.fit_reason is None
    # the bootstrap-t interval is close to the fit-covariance one here: the 7 frontier points
    # scatter about the curve alike, which is what both read (within 5% at either end)
    assert got.b_crit_fit_lower == pytest.approx(got.b_crit_cov_lower, rel=0.05)
    assert got.b_crit_fit_upper == pytest.approx(got.b_crit_cov_upper, rel=0.05)
    trials = critical_batch_size_bootstrap(planted(b_crit, seed=0), "maximize",
                                           resample="trials")
    assert trials.interval == "trial bootstrap" and trials.b_crit_fit == got.b_crit_fit
    assert trials.bootstrap.n_fits < 1000  # identical resampled frontiers are fitted once
    table = got.estimates().set_index("method")
    assert list(table.index) == ["mccandlish_fit", "mccandlish_fit_cov", "zhang_20pct",
                                 "gns_simple"]
    assert table.loc["mccandlish_fit", "lower"] == got.b_crit_fit_lower
    assert table.loc["mccandlish_fit_cov", "lower"] == got.b_crit_cov_lower
    assert table.loc["zhang_20pct", "ratio_to_b_crit"] == pytest.approx(
        got.b_crit_zhang / got.b_crit_fit)


def test_planted_trial_bootstrap_covers_b_crit_at_about_its_level_over_seeds():
    # 50 studies of the B_crit = 200 plant; 200 resamples each to keep the test short
    inside = [got.b_crit_fit_lower <= 200 <= got.b_crit_fit_upper
              for got in (critical_batch_size_bootstrap(planted(200, seed), "maximize",
                                                        n_boot=200, seed=seed,
                                                        resample="trials")
                          for seed in range(50))]
    coverage = float(np.mean(inside))
    print(f"coverage of B_crit = 200 by the 95% trial-bootstrap interval: {coverage:.2f}")
    assert coverage >= 0.85


def test_identical_trials_leave_nothing_to_resample():
    table = planted(200, seed=0, sigma=0.0)
    got = critical_batch_size_bootstrap(table, "maximize")
    assert got.b_crit_fit == pytest.approx(200, rel=1e-6)
    assert got.b_crit_fit_lower == pytest.approx(200, rel=1e-6)
    assert got.b_crit_fit_upper == pytest.approx(200, rel=1e-6)
    trials = critical_batch_size_bootstrap(table, "maximize", resample="trials")
    assert trials.bootstrap.n_fits == 1
    assert trials.b_crit_fit_lower == pytest.approx(200, rel=1e-6)


def test_bootstrap_is_seeded():
    table = planted(200, seed=4)
    first = critical_batch_size_bootstrap(table, "maximize", n_boot=100, seed=3)
    again = critical_batch_size_bootstrap(table, "maximize", n_boot=100, seed=3)
    other = critical_batch_size_bootstrap(table, "maximize", n_boot=100, seed=4)
    np.testing.assert_array_equal(first.bootstrap.samples, again.bootstrap.samples)
    assert not np.array_equal(first.bootstrap.samples, other.bootstrap.samples)


def test_resamples_that_run_to_the_top_make_the_upper_bound_unbounded():
    # B_crit 3000 far above the largest batch size measured, 256: steps still fall almost as 1/B
    table = planted(3000, seed=1, batch=POWERS[:5])
    for resample, name in (("trials", "trial bootstrap"), ("residuals", "residual bootstrap-t")):
        got = critical_batch_size_bootstrap(table, "maximize", n_boot=300, resample=resample)
        boot = got.bootstrap
        assert boot.frac_above > 0.025
        assert got.b_crit_fit_upper == math.inf and got.b_crit_fit_lower > 0
        assert boot.reason.startswith(f"{name}: {boot.frac_above:.0%} of resamples put "
                                      "B_crit above the fit's range")
        assert boot.reason.endswith(": the upper bound is unbounded")
        reasons = got.estimates().set_index("method")["reason"]
        assert boot.reason in reasons["mccandlish_fit"]
    # the trial bootstrap's lower end reaches below the plant; the bootstrap-t's, centred on
    # an extrapolated 12,800 (50 x the largest batch size), does not: past the batch sizes
    # measured neither interval is to be read as calibrated (fit_reason says "extrapolation")
    assert got.b_crit_fit_lower > 3000 and "an extrapolation" in got.fit_reason


def test_resamples_without_a_fit_widen_both_ends():
    # four batch sizes, one trial of three reaching the target at each: a resample loses a
    # batch size's point with probability (2/3)^3 = 30%, and often keeps fewer than three
    table = planted(200, seed=2, per_batch=3, batch=POWERS[:4])
    table.loc[table.index % 3 != 0, ["reached_target", "steps_to_target"]] = [False, math.nan]
    got = critical_batch_size_bootstrap(table, "maximize", n_boot=300, resample="trials")
    boot = got.bootstrap
    assert boot.frac_undefined > 0.2
    assert int(np.isnan(boot.samples).sum()) == round(boot.frac_undefined * 300)
    assert (got.b_crit_fit_lower, got.b_crit_fit_upper) == (0, math.inf)
    assert "had no fit (under 3 batch sizes kept a point, or no convergence)" in boot.reason
    assert boot.reason.endswith(": the lower and upper bounds are unbounded")
    assert math.isfinite(got.b_crit_fit)  # the point itself has its four batch sizes


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_boot must be > 0"):
        critical_batch_size_bootstrap(planted(200, 0), "maximize", n_boot=0)
    with pytest.raises(ValueError, match="not 'up'"):
        critical_batch_size_bootstrap(planted(200, 0), "up")
    with pytest.raises(ValueError, match=r"resample must be one of \['residuals', 'trials'\], "
                                         "got 'jackknife'"):
        critical_batch_size_bootstrap(planted(200, 0), "maximize", resample="jackknife")


def test_without_three_frontier_points_there_is_no_fit_to_redo():
    got = critical_batch_size_bootstrap(planted(200, 0, batch=POWERS[:2]), "maximize")
    assert got.bootstrap is None and got.interval == "fit covariance"
    assert math.isnan(got.b_crit_fit_lower) and math.isnan(got.b_crit_fit)
    assert got.fit_reason == "2 batch sizes with steps > 0; the fit needs 3"
    assert got.estimates()["method"].tolist() == ["mccandlish_fit", "zhang_20pct", "gns_simple"]


def test_very_unequal_numbers_of_trials_are_said_to_bias_the_fit():
    even = critical_batch_size_bootstrap(planted(200, 0), "maximize", n_boot=50)
    assert even.fit_reason is None
    table = planted(200, 0, per_batch=8)
    large = table["batch_size"] >= 256
    uneven = table[~large | (table.index % 8 < 2)]  # 8 trials below 256, 2 from 256 on
    got = critical_batch_size_bootstrap(uneven, "maximize", n_boot=50)
    assert got.fit_reason.startswith("the batch sizes fitted had 2 to 8 trials: a minimum over "
                                     "more trials is lower, which biases B_crit")
    reasons = got.estimates().set_index("method")["reason"]
    assert got.fit_reason in reasons["mccandlish_fit"]
    assert reasons["mccandlish_fit_cov"] == got.fit_reason
