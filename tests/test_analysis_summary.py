"""analyze and its helpers on literal tables: counts, the noise scale of the best trials, the
at-target columns of older tables, the settings carried into the report's words, and which
failures become a reason (only ``CannotCompute``) and which propagate (every bug)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lbt_study.analysis import (
    AnalysisSettings,
    CannotCompute,
    Outcome,
    StudyInfo,
    add_targets_from_history,
    analyze,
    error_counts,
    gns_curves,
    gns_of_best,
    median_gns,
    status_counts,
)
from lbt_study.report.document import Reason, Table, Text
from lbt_study.report.framework import SectionSpec, build_section
from lbt_study.report.sections import critical, steps, throughput
from lbt_study.report.sections.critical import critical_table

NAN = math.nan
STUDY = StudyInfo({"name": "literal"}, "maximize", 0.9)
# One ok trial per batch size; steps to target S(B) = 100 (1 + 128 / B) (McCandlish et al.):
# examples ratios S B / (S0 B0) = 1, 1.2, 1.6, 2.4, 4 and step decreases -, 0.4, 1/3, 1/4, 1/6.
TRIALS = pd.DataFrame({
    "trial_id": ["t32", "t64", "t128", "t256", "t512"],
    "status": ["ok"] * 5,
    "error": [None] * 5,
    "batch_size": [32, 64, 128, 256, 512],
    "norm": ["batch"] * 5,
    "workers": [1] * 5,
    "learning_rate": [0.1, 0.2, 0.4, 0.8, 1.6],
    "warmup_epochs": [0.5] * 5,
    "final_objective": [0.95, 0.95, 0.94, 0.93, 0.92],
    "reached_target": [True] * 5,
    "steps_to_target": [500.0, 300.0, 200.0, 150.0, 125.0],
    "examples_to_target": [16000.0, 19200.0, 25600.0, 38400.0, 64000.0],
    "seconds_to_target": [5.0, 3.0, 2.0, 1.5, 1.25],
    "throughput": [100.0, 190.0, 350.0, 600.0, 900.0],
    "final_gns_simple": [100.0, NAN, 140.0, 160.0, 180.0],
    "final_gap_accuracy": [0.01, 0.02, 0.03, 0.04, 0.05],
    "final_gap_loss": [0.02, 0.03, 0.04, 0.05, 0.06],
})
HISTORY = pd.DataFrame({
    "trial_id": ["t32", "t32", "t32"],
    "step": [0, 250, 500],
    "examples_seen": [0, 8000, 16000],
    "objective": [0.1, 0.5, 0.95],
    "gns_simple": [50.0, 80.0, 100.0],
})


def words(a) -> str:
    """Every text of the steps, critical and throughput sections, table cells included."""
    parts = []
    for spec in (steps.SECTION, critical.SECTION, throughput.SECTION):
        section, _ = build_section(spec, a)
        for item in section.items:
            if isinstance(item, Text | Reason):
                parts.append(item.text)
            elif isinstance(item, Table):
                parts.extend(str(v) for v in item.frame.to_numpy().ravel())
    return "\n".join(parts)


def test_status_counts_lists_every_known_status_then_the_others():
    trials = pd.DataFrame({"status": ["ok", "failed", "ok", "lost", "oom"]})
    expected = pd.DataFrame({"status": ["ok", "pruned", "diverged", "oom", "failed", "lost"],
                             "trials": [2, 0, 0, 1, 1, 1]})
    assert_frame_equal(status_counts(trials), expected)
    assert status_counts(pd.DataFrame())["trials"].tolist() == [0, 0, 0, 0, 0]


def test_error_counts_groups_messages_most_frequent_first():
    trials = pd.DataFrame({
        "status": ["failed", "oom", "failed", "ok", "failed"],
        "batch_size": [64, 32, 32, 16, 64],
        "error": ["CUDA out of memory", "worker died", "CUDA out of memory", None, ""],
    })
    expected = pd.DataFrame({"error": ["CUDA out of memory", "worker died"], "trials": [2, 1],
                             "status": ["failed", "oom"], "batch_size": ["32, 64", "32"]})
    assert_frame_equal(error_counts(trials), expected)
    assert error_counts(trials.drop(columns="error")).empty
    assert error_counts(trials.assign(error=None)).empty


def test_gns_of_best_keeps_batch_sizes_with_a_best_trial_and_takes_the_median():
    best = pd.DataFrame({"batch_size": [16, 32, 64, 128, 256],
                         "trial_id": ["a", "b", None, "d", "e"],
                         "final_gns_simple": [100.0, NAN, NAN, 160.0, 400.0],
                         "n_candidates": [2, 1, 0, 3, 1]})
    gns = gns_of_best(Outcome(best))
    assert gns.value["batch_size"].tolist() == [16, 32, 128, 256]
    median, how = median_gns(gns)
    assert median == 160.0  # the mean would be 220
    assert how == "median final_gns_simple of the best trial at 3 of 4 batch sizes"
    none, why = median_gns(gns_of_best(Outcome(best.assign(final_gns_simple=NAN))))
    assert none is None and "no best trial has a final_gns_simple value" in why
    assert gns_of_best(Outcome(reason="no rows")).reason == "no rows"
    assert "no final_gns_probe, final_gns_simple columns" in gns_of_best(
        Outcome(best.drop(columns="final_gns_simple"))).reason


def test_gns_curves_thin_each_trial_to_the_settings_points():
    best = pd.DataFrame({"batch_size": [32], "trial_id": ["t"], "n_candidates": [1]})
    history = pd.DataFrame({"trial_id": ["t"] * 10, "examples_seen": range(0, 100, 10),
                            "gns_simple": [float(i) for i in range(10)]})
    curves = gns_curves(Outcome(best), history, best, "maximize",
                        AnalysisSettings(gns_points_per_trial=3))
    assert curves.value.rows["examples_seen"].tolist() == [0, 40, 80]  # every 10 // 3 + 1
    assert (curves.value.source, curves.value.fallback) == ("gns_simple", False)
    every = gns_curves(Outcome(best), history, best, "maximize")
    assert len(every.value.rows) == 10
    silent = gns_curves(Outcome(best), history.assign(gns_simple=NAN), best, "maximize")
    assert "no gns_simple values" in silent.reason


def test_add_targets_from_history_measures_the_crossing_of_the_target():
    old = TRIALS[["trial_id", "status", "batch_size"]].head(1)
    out, notes = add_targets_from_history(old, HISTORY, STUDY)
    crossing = 250 * 2 ** ((0.9 - 0.5) / (0.95 - 0.5))  # between steps 250 and 500, in logs
    assert out.loc[0, "reached_target"]
    assert out.loc[0, "steps_to_target"] == pytest.approx(crossing)
    assert out.loc[0, "examples_to_target"] == pytest.approx(32 * crossing)
    assert len(notes) == 1 and "measured from the history with time_to_target" in notes[0]
    same, none = add_targets_from_history(TRIALS, HISTORY, STUDY)
    assert same is TRIALS and none == ()
    untouched, _ = add_targets_from_history(old, HISTORY, StudyInfo({}, "maximize", None))
    assert "steps_to_target" not in untouched


def test_default_settings_are_the_analysis_functions_defaults():
    s = AnalysisSettings()
    assert (s.n_boot, s.seed, s.ci) == (1000, 0, 0.95)
    assert (s.zhang_excess, s.perfect_tol, s.plateau_tol) == (0.2, 0.2, 0.1)
    assert (s.statuses, s.throughput_statuses) == (("ok",), ("ok", "pruned"))
    a = analyze(TRIALS, HISTORY, STUDY)
    assert a.settings == s
    text = words(a)
    assert "20% above it (Zhang et al. 2024)" in text and "(examples_ratio <= 1.2)" in text
    assert "less than 10% from the previous batch size (step_decrease < 0.1)" in text
    assert "Zhang et al. 2024 20% rule" in text
    table = a.results.critical.value.table.set_index("method")
    assert table.loc["zhang_20pct", "b_crit"] == pytest.approx(64)


def test_a_zhang_excess_of_30_percent_moves_the_estimate_and_the_words():
    a = analyze(TRIALS, HISTORY, STUDY, settings=AnalysisSettings(zhang_excess=0.3))
    assert a.settings.zhang_excess == 0.3
    table = critical_table(a).set_index("method")
    # ratio 1.3 lies between 1.2 (B = 64) and 1.6 (B = 128), interpolated in log-log
    expected = 64 * 2 ** (math.log(1.3 / 1.2) / math.log(1.6 / 1.2))
    assert table.loc["zhang_20pct", "b_crit"] == pytest.approx(expected)
    assert table.loc["zhang_20pct", "how"] == ("steps 30% above perfect scaling from the "
                                               "smallest B (B0 = 32; on a McCandlish curve "
                                               "1.3 B0 + 0.3 B_crit)")
    text = words(a)
    assert "30% above it (Zhang et al. 2024)" in text
    assert "steps to target are 30% above perfect linear scaling" in text
    assert "Zhang et al. 2024 30% rule" in text
    # the regime threshold is a setting of its own, still 0.2: the only "20%" left
    assert text.count("20%") == 1 and "within 20% of the smallest" in text


def test_regime_thresholds_reach_the_labels_and_the_words():
    a = analyze(TRIALS, HISTORY, STUDY,
                settings=AnalysisSettings(perfect_tol=0.1, plateau_tol=0.5))
    regimes = a.results.regimes.value.set_index("batch_size")["regime"]
    # 64: ratio 1.2 > 1.1 and steps fell by 0.4 < 0.5: a plateau under these thresholds
    assert regimes.tolist() == ["perfect scaling"] + ["maximal data parallelism"] * 4
    text = words(a)
    assert "within 10% of the smallest batch size's (examples_ratio <= 1.1)" in text
    assert "less than 50% from the previous batch size (step_decrease < 0.5)" in text
    default = analyze(TRIALS, HISTORY, STUDY).results.regimes.value["regime"].tolist()
    assert default == ["perfect scaling"] * 2 + ["diminishing returns"] * 3


def test_bootstrap_and_status_settings_reach_the_analyses_and_the_words():
    trials = pd.concat([TRIALS, TRIALS.head(1).assign(trial_id="fast", status="pruned",
                                                      throughput=1000.0)], ignore_index=True)
    s = AnalysisSettings(n_boot=50, seed=7, ci=0.9, throughput_statuses=("ok",))
    a = analyze(trials, HISTORY, STUDY, settings=s)
    text = words(a)
    assert "the 90% interval of the minimum when the batch size's trials are resampled" in text
    assert "a studentized residual bootstrap (50 resamples, seed 7)" in text
    cbs = a.results.critical.value.cbs
    assert (cbs.bootstrap.n_boot, cbs.bootstrap.seed, cbs.ci) == (50, 7, 0.9)
    assert "of the fastest trial with status ok per (batch size, workers)" in text
    assert a.results.throughput.value.loc[0, "trial_id"] == "t32"  # the pruned one does not count
    default = analyze(trials, HISTORY, STUDY)
    assert default.results.throughput.value.loc[0, "trial_id"] == "fast"
    assert "with status ok or pruned per" in words(default)


@pytest.mark.parametrize("bad", [{"ci": 1.5}, {"n_boot": 0}, {"zhang_excess": 0},
                                 {"plateau_tol": -0.1}, {"statuses": ("done",)},
                                 {"throughput_statuses": ()}])
def test_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValueError):
        AnalysisSettings(**bad)


def test_analyze_says_why_instead_of_raising():
    empty = analyze(pd.DataFrame(), pd.DataFrame(), STUDY)
    assert empty.results.best.reason == "the trials table has no rows: no trial has finished"
    assert empty.results.throughput.reason == empty.results.best.reason
    blind = analyze(TRIALS, HISTORY, StudyInfo({}, None, 0.9))
    assert "never guesses it" in blind.results.best.reason
    assert blind.results.throughput.reason is None  # needs no direction
    no_target = analyze(TRIALS, HISTORY, StudyInfo({}, "maximize", None))
    assert "the study has no target" in no_target.results.steps.reason


def test_critical_table_has_the_bootstrap_the_covariance_row_and_ratios():
    a = analyze(TRIALS, HISTORY, STUDY)
    table = critical_table(a).set_index("method")
    assert list(table.index) == ["mccandlish_fit", "mccandlish_fit_cov", "zhang_20pct",
                                 "gns_simple"]
    assert table.loc["mccandlish_fit", "b_crit"] == pytest.approx(128)
    # the frontier lies on the curve: no residual to resample, the interval collapses
    assert table.loc["mccandlish_fit", ["lower", "upper"]].tolist() == pytest.approx([128, 128])
    assert "1000 residual bootstrap resamples" in table.loc["mccandlish_fit", "how"]
    assert "covariance" in table.loc["mccandlish_fit_cov", "how"]
    assert table.loc["mccandlish_fit_cov", "s_min"] == pytest.approx(100)
    assert math.isnan(table.loc["zhang_20pct", "s_min"])
    # B_simple: the median final_gns_simple of the best trials, 150, over B_crit 128
    assert table.loc["gns_simple", "b_crit"] == 150
    assert table.loc["gns_simple", "ratio_to_b_crit"] == pytest.approx(150 / 128)
    assert table.loc["zhang_20pct", "ratio_to_b_crit"] == pytest.approx(64 / 128)
    assert math.isnan(table.loc["mccandlish_fit", "ratio_to_b_crit"])
    text = words(a)
    assert "B_simple / B_crit = 1.17 (B_simple 150, B_crit 128)" in text
    assert "a studentized residual bootstrap (1000 resamples, seed 0)" in text


def test_zhang_flag_when_the_smallest_batch_size_dominates_and_not_otherwise():
    # B0 = 32, Zhang's estimate 64: 1.2 B0 = 38.4 is 60% of it (on a McCandlish curve
    # 1.2 * 32 + 0.2 * 128 = 64 exactly)
    flagged = analyze(TRIALS, HISTORY, STUDY)
    cbs = flagged.results.critical.value.cbs
    assert (cbs.b0, cbs.zhang_b0_share) == (32, pytest.approx(0.6))
    note = ("this estimate moves with the smallest batch size measured (B0 = 32): on a "
            "McCandlish curve it equals 1.2 B0 + 0.2 B_crit, and 1.2 B0 is 60% of it; with "
            "the fitted B_crit 128 that is 38.4 + 25.6 = 64")
    assert cbs.zhang_reason == note
    assert f"Note: Zhang et al. 2024 rule: {note}." in words(flagged)
    # B0 = 16 on the same curve (900 steps): the estimate 42.9, of which 1.2 B0 is 45%
    wider = pd.concat([TRIALS.head(1).assign(trial_id="t16", batch_size=16,
                                             steps_to_target=900.0), TRIALS],
                      ignore_index=True)
    plain = analyze(wider, HISTORY, STUDY).results.critical.value
    assert plain.cbs.zhang_b0_share == pytest.approx(0.45, abs=0.01)
    assert plain.cbs.zhang_reason is None
    assert pd.isna(plain.table.set_index("method").loc["zhang_20pct", "reason"])
    assert "Note: Zhang" not in words(analyze(wider, HISTORY, STUDY))


def test_gns_at_target_of_the_frontier_trials_is_preferred_to_final_gns_simple():
    trials = TRIALS.assign(gns_at_target=[10.0, 20.0, NAN, 40.0, 50.0])
    a = analyze(trials, HISTORY, STUDY)
    row = critical_table(a).set_index("method").loc["gns_simple"]
    assert row["b_crit"] == 30.0  # the median of 10, 20, 40, 50; final_gns_simple's is 150
    assert row["how"] == "median gns_at_target of the fastest trial at 4 of 5 batch sizes"
    fallback = analyze(trials.assign(gns_at_target=NAN), HISTORY, STUDY)
    row = critical_table(fallback).set_index("method").loc["gns_simple"]
    assert row["b_crit"] == 150.0
    assert row["how"] == "median final_gns_simple of the best trial at 4 of 5 batch sizes"


def test_lr_by_norm_is_each_norms_own_fit_and_absent_with_one_norm():
    import numpy as np

    from lbt_study.analysis.lr import lr_scaling
    from lbt_study.analysis.summary import lr_by_norm

    rng = np.random.default_rng(0)
    rows = []
    for norm, k in (("batch", 0.5), ("layer", 1.0)):
        for b in (16, 64, 256, 1024):
            for i, lr in enumerate(np.exp(rng.uniform(np.log(1e-3), 0.0, 6))):
                peak = (0.003 if k < 1 else 0.0005) * b ** k  # inside the lrs tried
                rows.append({"trial_id": f"{norm}{b}-{i}", "status": "ok", "norm": norm,
                             "batch_size": b, "learning_rate": lr, "warmup_epochs": 0.5,
                             "final_objective": 0.95 - 0.015 * np.log(lr / peak) ** 2})
    trials = pd.DataFrame(rows)
    got = lr_by_norm(trials, STUDY, AnalysisSettings()).value.fits
    got = got[got["parameter"] == "learning_rate"].set_index("norm")["exponent"]
    for norm, k in (("batch", 0.5), ("layer", 1.0)):
        alone = lr_scaling(trials[trials["norm"] == norm], "maximize").fits.iloc[0]
        assert got[norm] == pytest.approx(alone["exponent"]) == pytest.approx(k, abs=1e-6)
    assert lr_by_norm(trials[trials["norm"] == "batch"], STUDY, AnalysisSettings()).value \
        is None


def test_a_trial_asha_pruned_after_the_target_counts_on_the_frontier_not_in_the_best():
    """ASHA stops a trial at a rung, after it may have reached the target: its steps to
    target are a measurement (the frontier counts it), its final objective is not (the best
    trial and the LR fit leave it out)."""
    faster = TRIALS.iloc[[1]].assign(trial_id="p64", status="pruned", steps_to_target=240.0,
                                     examples_to_target=240.0 * 64, final_objective=0.99)
    never = TRIALS.iloc[[2]].assign(trial_id="q128", status="pruned", reached_target=False,
                                    steps_to_target=NAN, examples_to_target=NAN)
    a = analyze(pd.concat([TRIALS, faster, never], ignore_index=True), HISTORY, STUDY)
    frontier = a.results.steps.value.set_index("batch_size")
    assert frontier.loc[64, "steps"] == 240.0 and frontier.loc[64, "trial_id"] == "p64"
    assert frontier.loc[128, "steps"] == 200.0  # the pruned trial that never reached: inf
    assert frontier.loc[128, "n_trials"] == 2
    best = a.results.best.value.set_index("batch_size")
    assert best.loc[64, "trial_id"] == "t64"  # 0.99 at a rung does not win
    ok_only = analyze(pd.concat([TRIALS, faster], ignore_index=True), HISTORY, STUDY,
                      settings=AnalysisSettings(frontier_statuses=("ok",)))
    assert ok_only.results.steps.value.set_index("batch_size").loc[64, "steps"] == 300.0


# ------------------------------------------------------------ which failures become a reason


@pytest.mark.parametrize("bug", [KeyError("thruput"), AttributeError("no attribute 'fits'"),
                                 TypeError("unsupported operand"), ValueError("a bad argument")])
def test_a_bug_in_an_analysis_propagates_out_of_analyze(monkeypatch, bug):
    """A misspelt column inside an analysis (a KeyError), or any error it does not declare,
    is not worded as "could not be computed": it reaches the caller."""
    import lbt_study.analysis.summary as summary

    def broken(trials, **_):
        if isinstance(bug, KeyError):
            return trials["thruput"]  # the typo itself
        raise bug

    monkeypatch.setattr(summary, "throughput_frontier", broken)
    with pytest.raises(type(bug), match="thruput" if isinstance(bug, KeyError) else str(bug)):
        analyze(TRIALS, HISTORY, STUDY)


def test_only_cannot_compute_becomes_the_reason(monkeypatch):
    import lbt_study.analysis.summary as summary

    def declared(trials, **_):
        raise CannotCompute("no worker count was measured")

    monkeypatch.setattr(summary, "throughput_frontier", declared)
    got = analyze(TRIALS, HISTORY, STUDY).results.throughput
    assert got.value is None
    assert got.reason == "throughput could not be computed: no worker count was measured"
    assert issubclass(CannotCompute, ValueError)  # callers catching ValueError still do


def test_a_missing_column_reads_alike_in_every_check():
    from lbt_study.analysis import missing_columns
    from lbt_study.analysis.branched import cbs_over_training

    assert missing_columns(TRIALS, ["norm", "budget", "lr"]) == \
        "the trials table has no budget, lr columns"
    assert missing_columns(TRIALS, ["norm"]) is None
    a = analyze(TRIALS.drop(columns="workers"), HISTORY, STUDY)
    assert a.results.throughput.reason == "the trials table has no workers column"
    with pytest.raises(CannotCompute, match="^the trials table has no branch_of, branch_fraction, "
                                            "branch_k columns: not a branched study$"):
        cbs_over_training(TRIALS, HISTORY, epsilon=0.05)


def test_the_steps_frontier_is_computed_once_and_shared(monkeypatch):
    import lbt_study.analysis.scaling as scaling
    import lbt_study.analysis.summary as summary

    calls = []
    for module in (summary, scaling):
        original = module.steps_to_target_frontier

        def counted(*args, _original=original, _name=module.__name__, **kwargs):
            calls.append((_name, kwargs.get("metric", args[2] if len(args) > 2 else None),
                          kwargs.get("by", "batch_size")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "steps_to_target_frontier", counted)
    a = analyze(TRIALS, HISTORY, STUDY)
    # the frontier the critical batch size is fitted to is built once; the per-norm
    # frontier is its own table (one row per (norm, batch size))
    assert calls == [("lbt_study.analysis.summary", "steps_to_target", "batch_size"),
                     ("lbt_study.analysis.summary", "examples_to_target", "batch_size"),
                     ("lbt_study.analysis.summary", "steps_to_target", ("norm", "batch_size"))]
    assert a.results.critical.value.cbs.bootstrap is not None  # the bootstrap ran on it


def test_a_section_that_needs_an_unknown_result_fails_when_declared():
    with pytest.raises(ValueError, match="no analysis result is called 'critcal'; the results: "
                                         "status_counts, errors, best"):
        SectionSpec("typo", ("critcal",), None, (), ())
