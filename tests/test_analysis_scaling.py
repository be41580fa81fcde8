"""Steps-to-target frontier, regimes and critical batch size, checked against hand answers."""

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lbt_study.analysis import (
    REGIMES,
    CannotCompute,
    classify_regimes,
    critical_batch_size,
    steps_to_target_frontier,
)
from lbt_study.analysis.frontier import min_interval

NAN = math.nan
PERFECT, DIMINISHING, MAXIMAL = REGIMES


def trials() -> pd.DataFrame:
    """Batch size 32: four ok trials reach the target (b and d tie at 80 steps, d has the
    better objective), e never does, f diverged after reaching it fastest. 64: one trial
    reaches it. 128: two ok trials never do. 256: only an out-of-memory trial."""
    return pd.DataFrame({
        "trial_id": list("abcdefghij"),
        "status": ["ok"] * 5 + ["diverged", "ok", "ok", "ok", "oom"],
        "batch_size": [32] * 6 + [64, 128, 128, 256],
        "final_objective": [0.90, 0.91, 0.92, 0.95, 0.50, 0.93, 0.90, 0.40, 0.45, NAN],
        "reached_target": [True] * 4 + [False, True, True, False, False, False],
        "steps_to_target": [100, 80, 120, 80, NAN, 10, 50, NAN, NAN, NAN],
        "examples_to_target": [3200, 2560, 3840, 2560, NAN, 320, 3200, NAN, NAN, NAN],
    })


def test_frontier_point_counts_and_reasons():
    got = steps_to_target_frontier(trials(), "maximize")
    assert list(got.columns) == ["batch_size", "trial_id", "steps", "steps_lower", "steps_upper",
                                 "n_trials", "n_reached", "upper_rank", "n_censored",
                                 "censored", "censored_at", "reason"]
    # 128: two ok trials that never reached the target ran out of budget: censored
    assert got["n_censored"].tolist() == [1, 0, 2, 0]
    assert got["censored"].tolist() == [False, False, True, False]
    assert list(got["batch_size"]) == [32, 64, 128, 256]
    assert list(got["trial_id"].iloc[:2]) == ["d", "g"]  # d: tie at 80 broken by objective
    assert got["steps"].iloc[:2].tolist() == [80.0, 50.0]
    assert got["steps"].iloc[2:].isna().all()
    assert got["n_trials"].tolist() == [5, 1, 2, 0]
    assert got["n_reached"].tolist() == [4, 1, 0, 0]
    # 32: five ok trials, 80 80 100 120 and one never reaching: the upper end is the third
    assert got["upper_rank"].iloc[:2].tolist() == [3, 1]
    assert got["upper_rank"].iloc[2:].isna().all()
    assert got.loc[0, ["steps_lower", "steps_upper"]].tolist() == [80.0, 100.0]
    reason = got["reason"]
    assert pd.isna(reason[0])
    assert reason[1] == "one trial: the interval collapses to the point (nothing to resample)"
    assert got.loc[1, ["steps_lower", "steps_upper"]].tolist() == [50.0, 50.0]
    assert reason[2] == ("censored: none of the 2 trials reached the target within its "
                         "budget, so its steps to target exceed it: no frontier point (raise "
                         "the budget)")
    assert reason[3] == "no trial with status in ('ok',) (of 1 here)"
    assert got.loc[2:, ["steps_lower", "steps_upper"]].isna().all().all()


def test_frontier_tie_break_follows_the_direction():
    got = steps_to_target_frontier(trials(), "minimize")
    assert got["trial_id"].iloc[0] == "b"


def test_frontier_counts_other_statuses_when_asked():
    got = steps_to_target_frontier(trials(), "maximize", statuses=("ok", "diverged"))
    assert got.loc[0, ["trial_id", "steps"]].tolist() == ["f", 10.0]


def test_frontier_is_deterministic():
    assert_frame_equal(steps_to_target_frontier(trials(), "maximize"),
                       steps_to_target_frontier(trials(), "maximize"))


def test_frontier_interval_by_hand():
    # Two reaching trials, 40 and 60: a resample of two misses 40 with probability 1/4, so
    # the bootstrap minimum is 40 three times in four and 60 otherwise: [40, 60] at 95%.
    table = pd.DataFrame({
        "trial_id": ["x", "y", "z"], "status": "ok", "batch_size": 16,
        "final_objective": [0.9, 0.9, 0.1], "reached_target": [True, True, False],
        "steps_to_target": [60, 40, NAN],
    })
    got = steps_to_target_frontier(table.head(2), "maximize").iloc[0]
    assert (got["steps"], got["steps_lower"], got["steps_upper"]) == (40, 40, 60)
    assert got["upper_rank"] == 2 and pd.isna(got["reason"])
    # z never reaches the target: a resample of three misses both x and y with probability
    # (1/3)^3 = 3.7% > 2.5%, so the point would vanish too often: the upper end is unbounded
    got = steps_to_target_frontier(table, "maximize").iloc[0]
    assert (got["steps"], got["steps_lower"], got["steps_upper"]) == (40, 40, math.inf)
    assert got["reason"] == ("2 of 3 trials reached the target: a resample has none of them "
                             "with probability 4%, so steps_upper is unbounded")
    # at 90% the tail is 5% > 3.7%: the third trial is not needed
    assert steps_to_target_frontier(table, "maximize", ci=0.9)["steps_upper"].iloc[0] == 60


def one_batch(steps: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(steps))], "status": "ok",
                         "batch_size": 64, "final_objective": 0.9, "reached_target": True,
                         "steps_to_target": steps})


def test_frontier_interval_means_how_far_the_point_leans_on_its_fastest_trials():
    same = steps_to_target_frontier(one_batch([100.0] * 5), "maximize").iloc[0]
    assert (same["steps_lower"], same["steps_upper"]) == (100, 100)  # nothing to lean on
    lucky = steps_to_target_frontier(one_batch([50, 100, 100, 100, 100]), "maximize").iloc[0]
    assert (lucky["steps"], lucky["steps_lower"], lucky["steps_upper"]) == (50, 50, 100)
    spread = steps_to_target_frontier(one_batch([50, 60, 70, 80, 90]), "maximize").iloc[0]
    assert (spread["steps_upper"], spread["upper_rank"]) == (70, 3)  # the third fastest
    # the rank of the upper end: the smallest k with ((n - k) / n)^n <= 2.5%
    ranks = [steps_to_target_frontier(one_batch(list(range(10, 10 + n))), "maximize")
             ["upper_rank"].iloc[0] for n in range(1, 13)]
    assert ranks == [1, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4]


def test_frontier_interval_covers_a_repeat_study_as_the_order_statistics_say():
    # It is no confidence interval for the best-tuned steps S: with trials S exp(|noise|) it
    # never covers S. It covers the frontier point of a repeat study of n trials with
    # probability 1/2 - C(2n - k, n) / C(2n, n), whatever the distribution (n 5, k 3: 0.417).
    # (min_interval is what the frontier computes per batch size: checked on one study first)
    rng = np.random.default_rng(3)
    n, studies, covered, covered_s = 5, 4000, 0, 0
    first = 500 * np.exp(np.abs(rng.normal(0, 0.3, n)))
    row = steps_to_target_frontier(one_batch(list(first)), "maximize").iloc[0]
    assert min_interval(np.sort(first), 0.95) == (row["steps_lower"], row["steps_upper"], 3)
    for _ in range(studies):
        first, repeat = 500 * np.exp(np.abs(rng.normal(0, 0.3, (2, n))))
        lower, upper, _ = min_interval(np.sort(first), 0.95)
        covered += lower <= repeat.min() <= upper
        covered_s += lower <= 500 <= upper
    assert covered_s == 0
    assert covered / studies == pytest.approx(0.5 - math.comb(7, 5) / math.comb(10, 5), abs=0.025)


def test_frontier_of_examples():
    got = steps_to_target_frontier(trials(), "maximize", metric="examples_to_target")
    assert "examples" in got.columns
    assert got["examples"].iloc[:2].tolist() == [2560.0, 3200.0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"direction": "higher"}, "not 'higher'"),
    ({"direction": "maximize", "metric": "steps"}, "the trials table has no steps column"),
    ({"direction": "maximize", "ci": 95}, "ci must lie strictly between 0 and 1"),
    ({"direction": "maximize", "by": ()}, "by must name at least one column"),
])
def test_frontier_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        steps_to_target_frontier(trials(), **kwargs)


def hand_frontier() -> pd.DataFrame:
    """S B / (S0 B0) = 1, 1, 1.04, 1.12, 1.6, 3.04, 6.016, -, 24.576; steps fall by -, 50%,
    48%, 46%, 29%, 5%, 1%, -, -2% (2048 has no value, so 4096 compares with 1024)."""
    return pd.DataFrame({
        "batch_size": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
        "steps": [1000, 500, 260, 140, 100, 95, 94, NAN, 96],
    })


def labels(regime: pd.Series) -> list:
    return [None if pd.isna(r) else r for r in regime]


def test_regimes_as_planted():
    got = classify_regimes(hand_frontier())
    assert labels(got["regime"]) == [PERFECT] * 4 + [DIMINISHING, MAXIMAL, MAXIMAL, None, MAXIMAL]
    np.testing.assert_allclose(got["examples_ratio"].dropna(),
                               [1, 1, 1.04, 1.12, 1.6, 3.04, 6.016, 24.576])
    assert got["step_decrease"].iloc[1] == pytest.approx(0.5)
    assert got["step_decrease"].iloc[8] == pytest.approx((94 - 96) / 94)
    assert got["regime_reason"].iloc[7] == "no steps value (no trial reached the target?)"
    assert got["regime_reason"].drop(7).isna().all()


def test_regimes_when_4096_still_falls():
    frame = hand_frontier()
    frame.loc[8, "steps"] = 47  # 94 -> 47 is a 50% decrease, far from perfect: diminishing
    assert classify_regimes(frame)["regime"].iloc[8] == DIMINISHING


def test_regimes_per_norm_and_sorted():
    one = hand_frontier().dropna()
    two = pd.concat([one.assign(norm="layer"), one.assign(norm="batch")]).iloc[::-1]
    got = classify_regimes(two, by="norm")
    assert got["norm"].tolist() == ["batch"] * 8 + ["layer"] * 8
    assert got["batch_size"].tolist()[:8] == one["batch_size"].tolist()
    assert got["regime"].tolist()[:8] == got["regime"].tolist()[8:]
    assert got["regime"].tolist()[:5] == [PERFECT] * 4 + [DIMINISHING]


def test_regimes_reject_two_points_per_batch_size():
    two = pd.concat([hand_frontier().assign(norm="layer"), hand_frontier().assign(norm="batch")])
    with pytest.raises(ValueError, match="one row per batch size"):
        classify_regimes(two)


def mccandlish(batch: np.ndarray, s_min: float, b_crit: float) -> np.ndarray:
    return s_min * (1 + b_crit / batch)


POWERS = 2.0 ** np.arange(4, 13)  # 16 .. 4096


def test_planted_critical_batch_size_recovered_within_10_percent():
    rng = np.random.default_rng(0)
    steps = mccandlish(POWERS, 1000, 512) * (1 + 0.03 * rng.standard_normal(len(POWERS)))
    got = critical_batch_size(pd.DataFrame({"batch_size": POWERS, "steps": steps}))
    assert got.b_crit_fit == pytest.approx(512, rel=0.10)
    assert got.s_min == pytest.approx(1000, rel=0.10)
    assert got.b_crit_fit_lower < 512 < got.b_crit_fit_upper
    assert got.e_min == pytest.approx(got.s_min * got.b_crit_fit)
    assert got.fit_reason is None


def test_exact_curve_fit_and_zhang_crossing_by_hand():
    steps = mccandlish(POWERS[:7], 1000, 256)  # 16 .. 1024
    got = critical_batch_size(pd.DataFrame({"batch_size": POWERS[:7], "steps": steps}), gns=300)
    assert got.b_crit_fit == pytest.approx(256, rel=1e-6)
    assert got.s_min == pytest.approx(1000, rel=1e-6)
    # S B / (S0 B0) = (B + 256) / 272: 320/272 < 1.2 at 64, 384/272 > 1.2 at 128. On the
    # log-log segment between them the ratio is (320/272) (B/64)^(ln(384/320) / ln 2), which
    # equals 1.2 at B = 64 * 2^(ln(1.2 * 272/320) / ln(384/320)).
    by_hand = 64 * 2 ** (math.log(1.2 * 272 / 320) / math.log(384 / 320))
    assert got.b_crit_zhang == pytest.approx(by_hand, rel=1e-12)
    assert 64 < got.b_crit_zhang < 1.2 * 272 - 256  # below the curve's own crossing (70.4)
    assert got.zhang_reason is None
    table = got.estimates()
    assert table["method"].tolist() == ["mccandlish_fit", "zhang_20pct", "gns_simple"]
    assert table["b_crit"].iloc[2] == 300


def test_zhang_crossing_halfway_in_log_b():
    # ratio 1 at 64 and 1.44 at 128: ln 1.2 is half of ln 1.44, so the crossing is 64 sqrt 2
    frame = pd.DataFrame({"batch_size": [16, 32, 64, 128], "steps": [1000, 500, 250, 180]})
    got = critical_batch_size(frame)
    assert got.b_crit_zhang == pytest.approx(64 * math.sqrt(2), rel=1e-12)
    points = got.points
    assert points["steps_perfect"].tolist() == [1000, 500, 250, 125]
    assert points["steps_zhang"].tolist() == pytest.approx([1200, 600, 300, 150])
    assert points["examples"].tolist() == [16000, 16000, 16000, 23040]


def test_perfect_scaling_throughout_gives_nan_and_reasons():
    frame = pd.DataFrame({"batch_size": POWERS, "steps": 16000 / POWERS})
    got = critical_batch_size(frame)
    assert math.isnan(got.b_crit_zhang) and math.isnan(got.b_crit_fit)
    assert math.isnan(got.b_crit_fit_lower) and math.isnan(got.e_min)
    assert "critical batch size is above it" in got.zhang_reason
    assert "B_crit lies above it" in got.fit_reason
    assert got.points["steps_fit"].isna().all()
    assert got.gns_reason == "no finite gradient noise scale given"


def test_too_few_points_and_unreached_batch_sizes():
    frame = pd.DataFrame({"batch_size": [16, 32, 64], "steps": [1000, 600, NAN]})
    got = critical_batch_size(frame)
    assert math.isnan(got.b_crit_fit)
    assert got.fit_reason == "2 batch sizes with steps > 0; the fit needs 3"
    # 600 * 32 / 16000 = 1.2: the crossing is the measured point itself
    assert got.b_crit_zhang == pytest.approx(32)
    assert len(got.points) == 3 and math.isnan(got.points["examples_ratio"].iloc[2])


def test_critical_batch_size_rejects_bad_arguments():
    frame = pd.DataFrame({"batch_size": [16, 16], "steps": [1, 2]})
    with pytest.raises(CannotCompute, match="one row per batch size"):
        critical_batch_size(frame)
    with pytest.raises(CannotCompute, match="the frontier table has no steps_to_target column"):
        critical_batch_size(frame, steps_col="steps_to_target")
