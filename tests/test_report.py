"""write_report on run directories built from literal tables: answers, reasons, escaping."""

from __future__ import annotations

import html
import importlib.util
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from lbt_study.errors import UserError
from lbt_study.records.results import HISTORY_COLUMNS, TRIALS_COLUMNS, write_table
from lbt_study.report import write_report

NAN = math.nan
XSS = "<script>alert(1)</script> &\"'"
IMG = '<img src="data:image/png;base64,'

# Planted: S(B) = S_min (1 + B_crit / B) with S_min = 100, B_crit = 128 (McCandlish et al.).
BATCH = [32, 64, 128, 256, 512]
STEPS = [500.0, 300.0, 200.0, 150.0, 125.0]
GNS = [100.0, 120.0, 140.0, 160.0, 180.0]  # final_gns_simple of each batch size's winner


def planted_trials() -> pd.DataFrame:
    """Two ok trials per batch size: "w<B>" (batch norm) wins on objective and reaches the
    target in STEPS; "s<B>" (layer norm) is worse and slower. lr follows the linear rule."""
    rows = []
    for b, steps, gns in zip(BATCH, STEPS, GNS, strict=True):
        lr = 0.1 * b / 32
        for kind, norm, obj, factor in (("w", "batch", 0.97, 1.0), ("s", "layer", 0.93, 1.5)):
            rows.append({
                "trial_id": f"{kind}{b}", "status": "ok", "error": None, "batch_size": b,
                "norm": norm, "workers": 1, "learning_rate": lr, "lr": lr,
                "warmup_epochs": 0.5, "final_objective": obj, "best_objective": obj,
                "final_gap_accuracy": 0.01 * factor, "final_gap_loss": 0.02 * factor,
                "reached_target": True, "steps_to_target": steps * factor,
                "examples_to_target": steps * factor * b,
                "seconds_to_target": steps * factor / 100, "throughput": 1000.0 * b ** 0.5,
                "final_gns_simple": gns if kind == "w" else NAN, "train_seconds": 10.0,
                "wall_seconds": 12.0, "target": 0.9,
            })
    return pd.DataFrame(rows).reindex(columns=list(TRIALS_COLUMNS))


def planted_history(trials: pd.DataFrame) -> pd.DataFrame:
    """Three evaluations per trial, with a rising gns_simple for the winners."""
    rows = []
    for t in trials.itertuples():
        for i, frac in enumerate((0.0, 0.5, 1.0)):
            gns = t.final_gns_simple * (0.5 + frac / 2)
            step = int(2 * frac * (t.steps_to_target if t.reached_target else 100))
            rows.append({"trial_id": t.trial_id, "step": step,
                         "examples_seen": step * t.batch_size, "train_seconds": step / 100,
                         "objective": [0.1, 0.9, t.final_objective][i],
                         "val_accuracy": [0.1, 0.9, t.final_objective][i], "gns_simple": gns})
    return pd.DataFrame(rows).reindex(columns=list(HISTORY_COLUMNS))


def make_run(path: Path, trials: pd.DataFrame, history: pd.DataFrame,
             meta: dict | None = None) -> Path:
    path.mkdir(parents=True)
    write_table(history, path, "history")
    write_table(trials, path, "trials")
    if meta is not None:
        study = {"name": "planted", "workload": "digits", "objective_direction": "maximize",
                 "target": 0.9, "trials": len(trials), "fixed": {"epochs": 8}, "asha": None,
                 "created": "2026-01-01T00:00:00"}
        (path / "study.json").write_text(json.dumps({**study, **meta}))
    return path


@pytest.fixture(scope="module")
def normal(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("normal") / "run", planted_trials(),
                   planted_history(planted_trials()), {})
    return run, write_report(run)


def csv(paths, name: str) -> pd.DataFrame:
    return pd.read_csv(paths.tables[name])


def test_normal_study_writes_every_figure_embedded_and_beside_the_markdown(normal):
    _, paths = normal
    assert paths.out_dir.name == "report" and paths.html.is_file()
    assert set(paths.figures) == {"leave_one_out", "best", "steps_to_target", "steps_by_norm",
                                  "gns", "lr_scaling", "gap_by_norm", "throughput", "pareto"}
    page = paths.html.read_text()
    assert page.count(IMG) == len(paths.figures)
    assert "<script" not in page.lower() and "http" not in page  # self-contained
    markdown = paths.markdown.read_text()
    for name, png in paths.figures.items():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in markdown
    assert "Not computed" not in page


def test_best_trial_per_batch_size_matches_the_table(normal):
    _, paths = normal
    best = csv(paths, "best_per_batch_size")
    assert best["batch_size"].tolist() == BATCH
    assert best["trial_id"].tolist() == [f"w{b}" for b in BATCH]
    assert best["final_objective"].tolist() == [0.97] * 5
    per_norm = csv(paths, "best_per_norm_and_batch_size")
    assert set(per_norm["trial_id"]) == {f"{k}{b}" for k in "ws" for b in BATCH}


def test_steps_frontier_regimes_and_critical_batch_size_recover_the_plant(normal):
    _, paths = normal
    steps = csv(paths, "steps_to_target")
    assert steps["steps"].tolist() == STEPS
    assert steps["trial_id"].tolist() == [f"w{b}" for b in BATCH]
    examples = [s * b for s, b in zip(STEPS, BATCH, strict=True)]
    assert csv(paths, "examples_to_target")["examples"].tolist() == examples
    regimes = csv(paths, "regimes").set_index("batch_size")["regime"]
    assert regimes[32] == "perfect scaling" and regimes[128] == "diminishing returns"
    crit = csv(paths, "critical_batch_size").set_index("method")
    assert crit.loc["mccandlish_fit", "b_crit"] == pytest.approx(128, rel=1e-6)
    assert crit.loc["mccandlish_fit", "s_min"] == pytest.approx(100, rel=1e-6)
    assert crit.loc["mccandlish_fit", "e_min"] == pytest.approx(12800, rel=1e-6)
    assert crit.loc["zhang_20pct", "b_crit"] == pytest.approx(64, rel=1e-6)
    assert crit.loc["gns_simple", "b_crit"] == 140.0  # median of the winners' GNS
    assert csv(paths, "gns")["final_gns_simple"].tolist() == GNS


def test_lr_gap_throughput_and_pareto_tables(normal):
    _, paths = normal
    lr = csv(paths, "lr_scaling").set_index("parameter")
    assert lr.loc["learning_rate", "exponent"] == pytest.approx(1.0)
    assert bool(lr.loc["learning_rate", "linear_rule_in_ci"])
    gap = csv(paths, "gap_by_norm")
    acc = gap[(gap["gap"] == "final_gap_accuracy") & (gap["norm"] == "layer")]
    assert acc["gap_of_best"].tolist() == pytest.approx([0.015] * 5)
    throughput = csv(paths, "throughput")
    assert throughput["throughput"].tolist() == pytest.approx([1000 * b ** 0.5 for b in BATCH])
    front = csv(paths, "pareto")
    assert front.loc[front["on_front"], "trial_id"].tolist() == ["w512"]


def test_report_is_deterministic(normal, tmp_path):
    run, paths = normal
    again = write_report(run, tmp_path / "again")
    assert again.html.read_text() == paths.html.read_text()
    for name, png in paths.figures.items():
        assert again.figures[name].read_bytes() == png.read_bytes()


def test_partial_study_reports_what_it_has_and_why_the_fit_is_missing(tmp_path):
    trials = planted_trials()
    trials = trials[trials["batch_size"].isin([32, 64])]
    run = make_run(tmp_path / "run", trials, planted_history(trials), {"trials": 40})
    paths = write_report(run)
    page = paths.html.read_text()
    assert "<td>trials requested</td>\n      <td>40</td>" in page
    assert "2 batch sizes with steps &gt; 0; the fit needs 3" in page
    crit = csv(paths, "critical_batch_size").set_index("method")
    assert math.isnan(crit.loc["mccandlish_fit", "b_crit"])
    assert crit.loc["zhang_20pct", "b_crit"] == pytest.approx(64)
    assert "steps_to_target" in paths.figures  # two points still draw


def test_failed_study_gives_reasons_and_no_figures(tmp_path):
    trials = planted_trials().head(4).assign(
        status="failed", error="RuntimeError: boom", final_objective=NAN, reached_target=False,
        steps_to_target=NAN, seconds_to_target=NAN, throughput=NAN)
    run = make_run(tmp_path / "run", trials, pd.DataFrame(columns=list(HISTORY_COLUMNS)), {})
    paths = write_report(run)
    page = paths.html.read_text()
    assert IMG not in page and paths.figures == {}
    assert "RuntimeError: boom" in page
    assert html.escape("none of the 2 trials here has status in ('ok',)") in page
    # the frontier counts ok and ASHA-pruned trials (AnalysisSettings.frontier_statuses)
    assert "no trial with status in (&#x27;ok&#x27;, &#x27;pruned&#x27;) (of 2 here)" in page
    assert "no trial competed" in page and "Not computed" in page
    assert csv(paths, "status_counts").set_index("status")["trials"]["failed"] == 4


def test_empty_tables_and_missing_study_json(tmp_path):
    empty = make_run(tmp_path / "empty", pd.DataFrame(columns=list(TRIALS_COLUMNS)),
                     pd.DataFrame(columns=list(HISTORY_COLUMNS)), {})
    page = write_report(empty).html.read_text()
    assert "the trials table has no rows: no trial has finished" in page
    bare = make_run(tmp_path / "bare", planted_trials(), planted_history(planted_trials()))
    paths = write_report(bare)
    page = paths.html.read_text()
    assert "study.json is missing" in page and "never guesses it" in page
    assert set(paths.figures) == {"throughput"}  # needs no direction
    started = tmp_path / "started"
    started.mkdir()
    (started / "study.json").write_text(json.dumps({"name": "x", "objective_direction": "minimize",
                                                    "target": None}))
    assert "no result tables yet" in write_report(started).html.read_text()
    with pytest.raises(UserError):
        write_report(tmp_path / "nowhere")


def test_user_strings_are_escaped_everywhere(tmp_path):
    trials = planted_trials()
    trials["norm"] = trials["norm"].where(trials["norm"] == "batch", "<script>alert(1)</script>$")
    trials.loc[0, ["status", "error"]] = ["failed", XSS]
    meta = {"name": XSS, "workload": "<script>x</script>", "fixed": {"model": XSS}}
    paths = write_report(make_run(tmp_path / "run", trials, planted_history(trials), meta))
    page = paths.html.read_text()
    assert "<script" not in page.lower()
    assert f"<h1>lbt-study report: {html.escape(XSS)}</h1>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;\"'" in page  # the error, in a table
    assert "gap_by_norm" in paths.figures  # a "$" in a norm does not break the drawing
    assert re.search(r"<script", paths.markdown.read_text(), re.IGNORECASE) is None


def test_old_trials_table_gets_targets_from_the_history(tmp_path):
    trials = planted_trials().drop(columns=["reached_target", "steps_to_target",
                                            "examples_to_target", "seconds_to_target"])
    history = planted_history(planted_trials())
    paths = write_report(make_run(tmp_path / "run", trials, history, {}))
    assert "measured from the history with time_to_target" in paths.html.read_text()
    steps = csv(paths, "steps_to_target")  # the history reaches 0.9 at its middle evaluation
    assert steps["steps"].tolist() == STEPS


def test_stale_figures_are_removed(normal, tmp_path):
    run, _ = normal
    out = tmp_path / "out"
    write_report(run, out)
    trials = planted_trials().assign(status="failed")
    failed = make_run(tmp_path / "failed", trials, pd.DataFrame(columns=list(HISTORY_COLUMNS)),
                      {"target": None})
    paths = write_report(failed, out)
    assert not list(out.glob("*.png")) and not (out / "steps_to_target.csv").exists()
    assert "the study has no target" in paths.html.read_text()
    assert csv(paths, "best_per_batch_size")["trial_id"].isna().all()


def test_generated_synthetic_study(tmp_path):
    path = Path(__file__).parents[1] / "scripts" / "report_benchmark.py"
    spec = importlib.util.spec_from_file_location("report_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = bench.synthetic_run(tmp_path / "run", n_trials=150, evals=40, seed=1)
    paths = write_report(run)
    assert len(paths.figures) == 9  # steps_by_norm too (several norms), and leave_one_out
    best = csv(paths, "best_per_batch_size")
    assert best["batch_size"].tolist() == list(bench.BATCH_SIZES)
    fit = csv(paths, "critical_batch_size").set_index("method").loc["mccandlish_fit"]
    assert fit["lower"] <= fit["b_crit"] <= fit["upper"]
    assert 0.3 * bench.B_CRIT < fit["b_crit"] < 3 * bench.B_CRIT


def test_minimize_study_ranks_the_other_way(tmp_path):
    run = make_run(tmp_path / "run", planted_trials(), planted_history(planted_trials()),
                   {"objective_direction": "minimize"})
    paths = write_report(run)
    assert csv(paths, "best_per_batch_size")["trial_id"].tolist() == [f"s{b}" for b in BATCH]
    front = csv(paths, "pareto")
    assert front.loc[front["on_front"], "trial_id"].tolist() == ["s512", "w512"]  # lower; faster
    assert "lowest final_objective" in paths.html.read_text()


def test_numbers_in_one_column_are_written_alike():
    """A whole float, a fractional one past 1000 and an int of the same size read the same way
    (the adaptive section's 381232 examples beside an estimated 512848.7 once read
    '381232' and '512,849')."""
    from lbt_study.report.document import fmt

    assert [fmt(381232.0), fmt(512848.7), fmt(381232), fmt(0.743412), fmt(-1234.56)] == \
        ["381232", "512849", "381232", "0.7434", "-1235"]
    assert [fmt(float("nan")), fmt(None), fmt(True)] == ["—", "—", "yes"]
