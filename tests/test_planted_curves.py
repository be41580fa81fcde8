"""Planted McCandlish curves through the whole pipeline: trials' rows on the geometric
evaluation schedule -> trials table (at-target columns interpolated) -> the tables on disk ->
the analyses the report renders. The critical batch size must come back.

Each trial's objective (an accuracy) is 1 - exp(-ln(10) s / S_trial) plus evaluation noise,
so it crosses the target 0.9 at step S_trial = q S(B), S(B) = S_min (1 + B_crit / B); q >= 1
is how well the trial's other hyperparameters were tuned (q = 1: the best-tuned trial, on the
curve); each batch size has a few trials of different q, shuffled.
"""

import math

import numpy as np
import pytest

from lbt_study.analysis.by_target import critical_by_target
from lbt_study.analysis.summary import StudyInfo, analyze
from lbt_study.records.results import ResultsWriter, load_results, trial_record
from lbt_study.records.rowlog import RowLog
from lbt_study.records.rundir import trial_rows_path
from lbt_study.train.batching import geometric_eval_steps

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]
S_MIN = 20.0
QUALITY = (1.0, 1.15, 1.35, 1.7)  # steps-to-target factors of a batch size's trials
TARGET = 0.9


def planted_rows(b: int, steps_to_target: float, rng: np.random.Generator) -> list[dict]:
    """The rows one trial reports, evaluated where lbt-study's default schedule would."""
    total = math.ceil(3 * steps_to_target) + 2
    marks = sorted(geometric_eval_steps([b * s for s in range(total + 1)], 4))
    rows = []
    for s in marks:
        acc = 1 - math.exp(-math.log(10) * s / steps_to_target) + rng.normal(0, 0.002)
        rows.append({"step": s, "examples_seen": b * s, "epoch": b * s / 1437,
                     "train_seconds": 0.01 * s, "val_loss": 1 - acc, "val_accuracy": acc,
                     "objective": acc, "status": "running", "total_steps": total})
    rows[-1]["status"] = "ok"
    return rows


def planted_run(tmp_path, b_crit: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    writer = ResultsWriter(tmp_path)
    for b in BATCH_SIZES:
        for i, q in enumerate(rng.permutation(QUALITY)):
            tid = f"B{b}_{i}"
            rows = planted_rows(b, q * S_MIN * (1 + b_crit / b), rng)
            log = RowLog(trial_rows_path(tmp_path, tid))  # as the trial writes them
            for row in rows:
                log.append(row)
            log.close()
            requested = {"batch_size": b, "lr": 0.1 * q, "norm": "none"}
            writer.add_trial(trial_record(tid, requested, rows, 1.0, None, "maximize",
                                          target=TARGET))
    writer.flush()
    return load_results(tmp_path)


@pytest.mark.parametrize("b_crit", [60, 200, 500])
def test_a_planted_critical_batch_size_comes_back_with_an_interval_around_it(tmp_path, b_crit):
    trials, history = planted_run(tmp_path, b_crit)
    study = StudyInfo({"name": "planted"}, "maximize", TARGET, targets=(0.8, TARGET))
    critical = analyze(trials, history, study).results.critical.value.table
    fit = critical.set_index("method").loc["mccandlish_fit"]
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.10)
    assert fit["lower"] <= b_crit <= fit["upper"], fit.to_dict()
    assert fit["upper"] / fit["lower"] < 3  # an interval, not everything
    # every batch size's best trial is on the curve: the frontier is S(B) within 3%
    best = trials.groupby("batch_size")["steps_to_target"].min()
    curve = S_MIN * (1 + b_crit / best.index.to_numpy())
    np.testing.assert_allclose(best.to_numpy(), curve, rtol=0.03)
    # the curves are proportional at every threshold: the same B_crit at 0.8 as at 0.9
    by_target = critical_by_target(trials, history, [0.8, TARGET], "maximize")
    assert by_target["b_crit"].tolist() == pytest.approx([b_crit] * 2, rel=0.10)
    assert (by_target["n_batch_sizes"] == len(BATCH_SIZES)).all()


def test_a_batch_size_whose_budget_ends_before_the_target_is_censored(tmp_path):
    """B_crit 200: S(1024) = 20 x 1.2 = 24 steps at best; a budget of 20 steps at B = 1024
    stops all its trials short of the target. The frontier marks it censored (its steps
    exceed 20), the fit leaves it out and says so, and the report says it."""
    from lbt_study.report import write_report

    rng = np.random.default_rng(3)
    writer = ResultsWriter(tmp_path)
    for b in BATCH_SIZES:
        for i, q in enumerate(QUALITY):
            tid = f"B{b}_{i}"
            rows = planted_rows(b, q * S_MIN * (1 + 200 / b), rng)
            if b == 1024:  # the budget: 20 steps
                rows = [r for r in rows if r["step"] <= 20]
                rows[-1]["status"] = "ok"
            log = RowLog(trial_rows_path(tmp_path, tid))
            for row in rows:
                log.append(row)
            log.close()
            writer.add_trial(trial_record(tid, {"batch_size": b, "lr": 0.1 * q, "norm": "none"},
                                          rows, 1.0, None, "maximize", target=TARGET))
    writer.flush()
    trials, history = load_results(tmp_path)
    results = analyze(trials, history, StudyInfo({"name": "c"}, "maximize", TARGET)).results
    frontier = results.steps.value.set_index("batch_size")
    assert frontier["censored"].tolist() == [False] * 6 + [True]
    assert frontier.loc[1024, "n_censored"] == 4 and frontier.loc[1024, "censored_at"] == 20
    assert math.isnan(frontier.loc[1024, "steps"])
    assert frontier.loc[1024, "reason"].startswith("censored: none of the 4 trials reached")
    fit = results.critical.value.table.set_index("method").loc["mccandlish_fit"]
    assert "censored batch sizes left out of the fit: 1024" in fit["reason"]
    assert fit["b_crit"] == pytest.approx(200, rel=0.15)  # the six others still tell it
    (tmp_path / "study.json").write_text('{"name": "c", "trials": 28, '
                                         '"objective_direction": "maximize", "target": 0.9}')
    report = write_report(tmp_path).markdown.read_text()
    assert "censored: none of the 4 trials reached the target within its budget" in report
