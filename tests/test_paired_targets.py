"""The paired ratio of B_crit across targets (issue 21): the same resampled trials measured
at every target, on planted histories whose crossings at each target follow a known
McCandlish curve."""

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis.by_target import critical_by_target
from lbt_study.analysis.paired import ratio_interval

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]
S_MIN = 20.0


def planted(curves: dict[float, float], seed: int = 0, per_batch: int = 5,
            shared: bool = False):
    """Trials whose objective, piecewise linear in log steps, crosses each target t at
    q_t S_t(B), S_t(B) = scale_t S_MIN (1 + B_crit_t / B) (``curves``: target -> B_crit_t;
    scale 1, 2, ... in target order), q_t = exp(|N(0, 0.2)|) drawn per trial and target
    (``shared``: one q per trial for every target)."""
    rng = np.random.default_rng(seed)
    targets = sorted(curves)
    trials, history = [], []
    for b in BATCH_SIZES:
        for i in range(per_batch):
            tid = f"B{b}_{i}"
            q = np.exp(np.abs(rng.normal(0, 0.2, 1 if shared else len(targets))))
            q = np.resize(q, len(targets))
            anchors = np.maximum.accumulate([(j + 1) * S_MIN * (1 + curves[t] / b) * q[j]
                                             for j, t in enumerate(targets)])
            knots = np.log([1.0, *anchors, 3 * anchors[-1]])
            values = [0.0, *targets, 1.0]
            steps = np.unique(np.geomspace(1, 3 * anchors[-1], 200).round())
            objective = np.interp(np.log(steps), knots, values)
            trials.append({"trial_id": tid, "batch_size": b, "status": "ok",
                           "final_objective": objective[-1]})
            history += [{"trial_id": tid, "step": s, "examples_seen": s * b, "objective": v}
                        for s, v in zip(steps, objective, strict=True)]
    return pd.DataFrame(trials), pd.DataFrame(history)


def test_the_same_target_twice_gives_a_ratio_of_exactly_one_in_every_draw():
    trials, history = planted({0.8: 60.0, 0.9: 200.0})
    table = critical_by_target(trials, history, [0.8, 0.8], "maximize", n_boot=200)
    assert table["b_crit_ratio"].tolist() == [1.0, 1.0]
    assert table.loc[1, ["ratio_lower", "ratio_upper"]].tolist() == [1.0, 1.0]
    assert np.isnan(table.loc[0, "ratio_lower"])  # the reference


def test_a_planted_growth_with_the_target_is_found_and_its_interval_excludes_one():
    """B_crit 60 at 0.8 and 200 at 0.9: the ratio 3.3 comes back and excludes 1."""
    trials, history = planted({0.8: 60.0, 0.9: 200.0})
    table = critical_by_target(trials, history, [0.9, 0.8], "maximize", n_boot=300)
    row = table.set_index("target").loc[0.9]
    assert row["b_crit_ratio"] == pytest.approx(200 / 60, rel=0.25)
    assert row["ratio_lower"] > 1
    assert row["ratio_lower"] <= 200 / 60 <= row["ratio_upper"]
    assert table.set_index("target").loc[0.8, "b_crit_ratio"] == 1.0  # the easiest target


def test_pairing_narrows_the_ratio_when_both_targets_share_the_trials_noise():
    """Proportional crossings (the same B_crit and the same trial factors at both targets):
    each B_crit's own interval is 10% wide or more (18-19% by the residual bootstrap-t here),
    the paired ratio's is 1 within 2% (the
    crossings' interpolation between evaluations is all that differs)."""
    trials, history = planted({0.8: 200.0, 0.9: 200.0}, seed=3, shared=True)
    table = critical_by_target(trials, history, [0.8, 0.9], "maximize", n_boot=300)
    row = table.iloc[1]
    assert (row["ratio_lower"], row["ratio_upper"]) == pytest.approx((1, 1), abs=0.02)
    own = table["upper"] / table["lower"]
    assert (own > 1.1).all()
    assert row["ratio_upper"] / row["ratio_lower"] < 1.02


def test_ratio_interval_counts_draws_without_a_ratio_against_both_ends():
    num = np.array([1.0, 2.0, np.nan, np.inf, 4.0, 0.0, 3.0, 2.0, 2.0, 2.0])
    den = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lower, upper, undefined = ratio_interval(num, den, 0.8)
    assert undefined == pytest.approx(0.2)  # the NaN and the x / 0
    assert (lower, upper) == (0.0, np.inf)


def test_the_report_names_the_literature_only_beside_a_ratio_that_excludes_one():
    from lbt_study.analysis.by_target import trials_at
    from lbt_study.analysis.summary import StudyInfo, analyze
    from lbt_study.report.sections.critical import _target_words

    trials, history = planted({0.8: 60.0, 0.9: 200.0})
    trials = trials_at(trials, history, 0.9, "maximize")
    study = StudyInfo({"name": "planted"}, "maximize", 0.9, targets=(0.8, 0.9))
    words = [item.text for item in _target_words(analyze(trials, history, study))]
    assert len(words) == 1
    assert words[0].startswith("B_crit at target 0.9 / at 0.8 = ")
    assert "it excludes 1, B_crit is larger at the harder target, as McCandlish et al. " \
           "(2018) and Zhang et al. (2024) find." in words[0]
    same, history = planted({0.8: 200.0, 0.9: 200.0}, seed=3)  # the same B_crit
    same = trials_at(same, history, 0.9, "maximize")
    words = [item.text for item in _target_words(analyze(same, history, study))]
    assert words[0].endswith("it contains 1, so these trials do not show B_crit changing "
                             "between the two targets.")
    assert "McCandlish" not in words[0]
