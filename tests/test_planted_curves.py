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
from lbt_study.batching import geometric_eval_steps
from lbt_study.results import ResultsWriter, load_results, trial_record
from lbt_study.rowlog import RowLog
from lbt_study.rundir import trial_rows_path

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
    critical = analyze(trials, history, study).value("critical")["table"]
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
