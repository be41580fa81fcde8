"""B_simple beside B_crit (issue 21): the probe at the crossing and its mean up to it, each a
median over the frontier's trials with intervals that carry B_crit's bootstrap draws."""

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis.noise_scale import gns_against_b_crit
from lbt_study.analysis.outcome import Outcome

AT = [87.0, 120.0, 200.0, 260.0, 444.0]  # the probe where each frontier trial crossed
MEAN = [40.0, 60.0, 80.0, 100.0, 140.0]  # its mean over the evaluations up to there


def frontier_and_trials():
    steps = Outcome(pd.DataFrame({"batch_size": [16, 32, 64, 128, 256],
                                  "trial_id": ["a", "b", "c", "d", "e"]}))
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d", "e", "slow"],
                           "gns_at_target": [*AT, 5000.0],
                           "gns_mean_to_target": [*MEAN, 1.0]})
    return steps, trials


def test_each_reading_is_the_median_of_the_frontier_trials_over_b_crit():
    steps, trials = frontier_and_trials()
    table = gns_against_b_crit(steps, trials, 100.0, np.full(2000, 100.0), 0.95).set_index(
        "measure")
    at, mean = table.loc["at_crossing"], table.loc["mean_to_crossing"]
    assert (at["gns"], at["ratio"], at["n_trials"]) == (200.0, 2.0, 5)  # not "slow"
    assert (at["ratio_min"], at["ratio_max"]) == (0.87, 4.44)
    assert (mean["gns"], mean["ratio"]) == (80.0, 0.8)
    # B_crit known exactly: the ratio's interval is the median's over B_crit
    assert at["ratio_lower"] == pytest.approx(at["gns_lower"] / 100.0)
    assert at["ratio_upper"] == pytest.approx(at["gns_upper"] / 100.0)
    assert at["gns_lower"] in AT and at["gns_upper"] in AT
    assert at["gns_lower"] < 200.0 < at["gns_upper"]


def test_b_crits_draws_widen_the_ratio_and_undefined_draws_count_against_both_ends():
    steps, trials = frontier_and_trials()
    exact = gns_against_b_crit(steps, trials, 100.0, np.full(2000, 100.0), 0.95).iloc[0]
    draws = np.random.default_rng(1).lognormal(np.log(100.0), 0.5, 2000)
    noisy = gns_against_b_crit(steps, trials, 100.0, draws, 0.95).iloc[0]
    assert noisy["ratio_lower"] < exact["ratio_lower"]
    assert noisy["ratio_upper"] > exact["ratio_upper"]
    assert noisy["gns_lower"] == exact["gns_lower"]  # the median's own interval is unchanged
    draws[:100] = np.nan
    undefined = gns_against_b_crit(steps, trials, 100.0, draws, 0.95).iloc[0]
    assert undefined["reason"] == "5% of B_crit's draws had no value, counted against both ends"


def test_missing_readings_and_draws_give_nan_and_a_reason():
    steps, trials = frontier_and_trials()
    no_mean = gns_against_b_crit(steps, trials.drop(columns="gns_mean_to_target"), 100.0,
                                 None, 0.95).set_index("measure")
    assert no_mean.loc["at_crossing", "gns"] == 200.0
    assert no_mean.loc["at_crossing", "reason"] == "B_crit has no bootstrap draws: no intervals"
    assert np.isnan(no_mean.loc["at_crossing", "ratio_lower"])
    assert no_mean.loc["mean_to_crossing", "reason"] == ("no frontier trial has a "
                                                        "gns_mean_to_target")
    failed = gns_against_b_crit(Outcome(reason="no trial reached the target"), trials, 100.0,
                                None, 0.95)
    assert failed["reason"].tolist() == ["no trial reached the target"] * 2
