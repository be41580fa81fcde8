"""What to run (issue 23, part 1): the recommendation and the leave-one-out check on planted
tables with known answers, the report's first section, and ``lbt-study recommend``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis._checks import CannotCompute
from lbt_study.analysis.recommend import leave_one_out, loo_summary, recommend
from lbt_study.cli import main
from lbt_study.report import write_report
from tests.test_report import make_run, planted_history

S_MIN, B_CRIT = 100.0, 64.0
BATCH = [16, 32, 64, 128, 256, 512, 1024]


def steps_at(b: float) -> float:
    return S_MIN * (1 + B_CRIT / b)


def per_step(b: float) -> float:
    """Training seconds per step: a fixed part and one growing with B, so the time to target
    (1 + 64/B)(0.01 + 0.0001 B) is least at B = 80, i.e. at B = 64 among those measured."""
    return 0.01 + 0.0001 * b


def planted(spread: tuple[float, ...] = (1.0, 1.001, 1.002), workers: int = 1) -> pd.DataFrame:
    """Trials per batch size on an exact McCandlish curve (the fastest exactly on it, the
    others ``spread`` times slower); lr follows the square-root rule; norm by speed rank."""
    rows = []
    for b in BATCH:
        for i, factor in enumerate(spread):
            s = steps_at(b) * factor
            rows.append({"trial_id": f"t{b}_{i}", "status": "ok", "batch_size": b,
                         "workers": workers, "learning_rate": 0.1 * (b / 256) ** 0.5,
                         "warmup_epochs": 0.5 * i, "norm": ("batch", "layer", "group")[i],
                         "final_objective": 0.97 - 0.01 * i, "reached_target": True,
                         "steps_to_target": s, "examples_to_target": s * b,
                         "seconds_to_target": s * per_step(b)})
    return pd.DataFrame(rows)


def by_goal(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["goal"]: row for _, row in table.iterrows()}


def test_each_goal_gets_its_known_batch_size_and_the_exact_prediction():
    r = recommend(planted(), "maximize", price_per_hour=2.0)
    goals = by_goal(r.table)
    assert r.b_crit == pytest.approx(B_CRIT, rel=1e-6)
    assert goals["steps"]["batch_size"] == 1024 and goals["examples"]["batch_size"] == 16
    assert goals["time"]["batch_size"] == 64 and goals["cost"]["batch_size"] == 64
    time = goals["time"]
    assert time["trial_id"] == "t64_0" and time["norm"] == "batch"
    assert time["learning_rate"] == pytest.approx(0.1 * (64 / 256) ** 0.5)
    assert time["predicted_steps"] == pytest.approx(steps_at(64), rel=1e-6)
    assert time["predicted_seconds"] == pytest.approx(steps_at(64) * per_step(64), rel=1e-6)
    assert time["measured_cost"] == pytest.approx(steps_at(64) * per_step(64) * 2.0 / 3600)
    assert time["evidence"] == "clear" and time["validity"] == "within the batch sizes measured"
    assert goals["steps"]["predicted_examples"] == pytest.approx(steps_at(1024) * 1024, rel=1e-6)
    assert "largest batch size measured" in goals["steps"]["validity"]
    assert "smallest batch size measured" in goals["examples"]["validity"]


def test_cost_counts_workers_and_is_not_priced_without_a_price():
    two = recommend(planted(workers=2), "maximize", price_per_hour=3.6)
    cost = by_goal(two.table)["cost"]
    assert cost["measured_cost"] == pytest.approx(cost["measured_seconds"] * 2 * 3.6 / 3600)
    unpriced = by_goal(recommend(planted(), "maximize").table)["cost"]
    assert unpriced["evidence"] == "not priced" and math.isnan(unpriced["batch_size"])


def test_a_runner_up_within_the_resampling_interval_is_not_enough_evidence():
    """With trials 1.0, 1.5 and 2.0 times the curve, B=64's point could rise to 2x without
    its fastest trial: B=128's time (1.5% slower) lies inside, so no clear choice."""
    goals = by_goal(recommend(planted((1.0, 1.5, 2.0)), "maximize").table)
    assert goals["time"]["batch_size"] == 64
    assert goals["time"]["evidence"] == "not enough evidence"
    assert "B=128" in goals["time"]["validity"] or "B=32" in goals["time"]["validity"]


def test_workers_filter_and_what_cannot_be_recommended():
    mixed = pd.concat([planted(workers=1), planted(workers=2).assign(
        trial_id=lambda f: "w" + f["trial_id"], seconds_to_target=lambda f:
        f["seconds_to_target"] / 1.8)])
    assert by_goal(recommend(mixed, "maximize").table)["time"]["workers"] == 2
    assert by_goal(recommend(mixed, "maximize", workers=1).table)["time"]["workers"] == 1
    with pytest.raises(CannotCompute, match=r"no trial ran with 4 workers; the study has \[1, 2\]"):
        recommend(mixed, "maximize", workers=4)
    with pytest.raises(CannotCompute, match="no trial reached the target"):
        recommend(planted().assign(reached_target=False), "maximize")
    with pytest.raises(ValueError, match="price_per_hour must be a positive number"):
        recommend(planted(), "maximize", price_per_hour=-1.0)


def test_leave_one_out_is_exact_on_the_curve_and_sees_a_misfit():
    frontier = pd.DataFrame({"batch_size": BATCH, "steps": [steps_at(b) for b in BATCH]})
    loo = leave_one_out(frontier)
    assert np.allclose(loo["relative_error"], 0, atol=1e-6)
    assert loo["extrapolated"].tolist() == [True, False, False, False, False, False, True]
    bent = frontier.assign(steps=frontier["steps"].where(frontier["batch_size"] != 128,
                                                         steps_at(128) * 1.5))
    errors = leave_one_out(bent).set_index("batch_size")["relative_error"]
    assert errors[128] == pytest.approx(1 / 1.5 - 1, abs=0.02)  # the others predict the curve
    summary = loo_summary(leave_one_out(bent))
    assert summary["interpolated"] > 0.01 and summary["extrapolated"] > 0


def _run_dir(tmp_path):
    trials = planted().assign(error=None, best_objective=lambda f: f["final_objective"],
                              train_seconds=10.0, wall_seconds=12.0, target=0.9,
                              lr=lambda f: f["learning_rate"])
    return make_run(tmp_path / "run", trials, planted_history(trials.assign(
        final_gns_simple=float("nan"))), {})


def test_the_report_opens_with_what_to_run(tmp_path):
    paths = write_report(_run_dir(tmp_path), tmp_path / "report")
    text = paths.markdown.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## What to run"
    assert "Least training time: B = 64, 1 workers, learning rate 0.05, norm batch (clear; " \
           "within the batch sizes measured)." in text
    table = pd.read_csv(paths.tables["recommendation"])
    assert table.set_index("goal").loc["time", "batch_size"] == 64
    assert "leave_one_out" in paths.figures


def test_cli_recommend_prints_the_goal_and_refuses_bad_input(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["recommend", str(run), "--goal", "time"]) == 0
    out = capsys.readouterr().out
    assert "B_crit (McCandlish fit) 64" in out and "time: within the batch sizes measured" in out
    assert main(["recommend", str(run), "--goal", "cost"]) == 2
    assert "--goal cost needs --price-per-hour" in capsys.readouterr().err
    assert main(["recommend", str(run), "--workers", "3"]) == 2
    assert "no trial ran with 3 workers; the study has [1]" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path / "none")]) == 2
    assert f"run directory not found: {tmp_path / 'none'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["recommend", str(run), "--price-per-hour", "nan"])
    assert exc.value.code == 2


def test_a_table_without_workers_counts_one_worker():
    r = recommend(planted().assign(workers=None), "maximize", price_per_hour=3600.0)
    cost = by_goal(r.table)["cost"]
    assert cost["measured_cost"] == pytest.approx(cost["measured_seconds"])
    assert cost["predicted_cost"] == pytest.approx(cost["predicted_seconds"])
