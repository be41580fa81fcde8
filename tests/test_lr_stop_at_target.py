"""The learning-rate fit of a study whose trials stop at the target: fitted to ln(steps to
target), since the final objective is the target's in every trial that reached it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis.settings import StudyInfo
from lbt_study.analysis.summary import LR_STEPS_METRIC, analyze, lr_inputs


def planted(stop: bool) -> pd.DataFrame:
    """ln steps = ln S(B) + 0.5 (ln lr - ln lr*(B))^2 with lr*(B) = 0.01 (B/16)^0.5; the final
    objective is the target (0.95) plus tiny lr-independent noise, as stop_at_target leaves it."""
    rng = np.random.default_rng(0)
    rows = []
    for b in (16, 32, 64, 128, 256, 512):
        best = 0.01 * (b / 16) ** 0.5
        for i, lr in enumerate(best * np.exp(np.linspace(-1.5, 1.5, 7))):
            steps = 200 * (1 + 64 / b) * np.exp(0.5 * np.log(lr / best) ** 2)
            rows.append({"trial_id": f"t{b}_{i}", "status": "ok", "batch_size": b,
                         "learning_rate": lr, "final_objective": 0.95 + rng.normal(0, 0.003),
                         "reached_target": True, "steps_to_target": steps,
                         "stop_at_target": stop})
    return pd.DataFrame(rows)


STUDY = StudyInfo(meta={}, direction="maximize", target=0.95)


def test_a_stop_at_target_study_fits_the_lr_to_log_steps():
    trials, direction, metric = lr_inputs(planted(True), STUDY)
    assert (direction, metric) == ("minimize", LR_STEPS_METRIC)
    fit = analyze(planted(True), pd.DataFrame(), STUDY).results.lr.value
    row = fit.fits.set_index("parameter").loc["learning_rate"]
    assert fit.metric == LR_STEPS_METRIC and fit.direction == "minimize"
    assert row["exponent"] == pytest.approx(0.5, abs=1e-6)


def test_otherwise_the_final_objective_in_the_study_direction():
    assert lr_inputs(planted(False), STUDY)[1:] == ("maximize", "final_objective")
    fit = analyze(planted(False), pd.DataFrame(), STUDY).results.lr.value
    # the objective is noise around the target: that fit finds no k near 0.5 (NaN here)
    k = fit.fits.set_index("parameter").loc["learning_rate", "exponent"]
    assert fit.metric == "final_objective" and not abs(k - 0.5) < 0.05
