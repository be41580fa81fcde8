"""The adaptive per-batch-size study: the stop rule and the allocation rule on literal tables
with known answers (planted McCandlish frontiers, S(B) = S_min (1 + B_crit / B)), the spec's
checks, the report's section, and a real small adaptive study through Ray."""

import json
import math

import pandas as pd
import pytest
from pydantic import ValidationError

from lbt_study import StopWhen, Study
from lbt_study.analysis.adaptive import (
    adaptive_summary,
    allocate,
    interval_influence,
    interval_state,
    look_level,
    looks_of,
    rel_width,
    rounds_table,
    stop_decision,
    trial_counts,
    uniform_cost,
)
from lbt_study.errors import UserError
from lbt_study.study.protocols import protocol_of
from lbt_study.study.spec import load_spec

B = [16, 32, 64, 128, 256, 512, 1024]
S_MIN, B_CRIT = 20.0, 60.0


def planted(quality: dict[int, list[float]], reached: dict[int, list[bool]] | None = None
            ) -> pd.DataFrame:
    """A trials table: trial i at batch size b needs q S(B) steps (q = 1: on the curve)."""
    rows = []
    for b, qs in quality.items():
        for i, q in enumerate(qs):
            hit = True if reached is None else reached.get(b, [True] * len(qs))[i]
            rows.append({"trial_id": f"B{b}_{i}", "batch_size": b, "status": "ok",
                         "reached_target": hit,
                         "steps_to_target": q * S_MIN * (1 + B_CRIT / b) if hit else math.nan,
                         "final_objective": 0.96 if hit else 0.5, "learning_rate": 0.1,
                         "examples_seen": 1000 * b, "train_seconds": 1.0 + b / 1024})
    return pd.DataFrame(rows)


def exact_but(noisy: int, n: int = 3) -> dict[int, list[float]]:
    """Every batch size's trials on the curve but those of ``noisy``, whose best is on the
    curve and the others 60% slower."""
    return {b: [1.0, 1.6, 1.6][:n] if b == noisy else [1.0] * n for b in B}


RULE = {"b_crit_rel_width": 0.5, "max_trials": 40, "min_trials": 3}


# ---------------------------------------------------------------------- the stop rule

def test_rel_width_is_the_interval_over_the_estimate():
    assert rel_width(50.0, 40.0, 90.0) == pytest.approx(1.0)
    assert rel_width(50.0, 40.0, math.inf) == math.inf
    assert math.isnan(rel_width(math.nan, 40.0, 90.0))


def scattered(amplitude: float) -> dict[int, list[float]]:
    """Frontier points alternately 1 + amplitude and 1 - amplitude times S(B), each batch
    size's other two trials 5% and 10% slower than its best."""
    return {b: [f, f * 1.05, f * 1.1]
            for b, f in zip(B, [1 + amplitude * (-1) ** i for i in range(len(B))], strict=True)}


def test_the_residual_interval_reads_the_frontiers_scatter_about_the_curve():
    # the default interval (residual bootstrap-t) comes from the frontier points' residuals:
    # an exact frontier has none, whatever its other trials; 4x the scatter, ~4x the width
    exact = interval_state(planted(scattered(0.0)), "maximize")
    assert exact["b_crit"] == pytest.approx(B_CRIT, rel=1e-6) and exact["level"] == 0.95
    assert exact["rel_width"] < 1e-5
    small = interval_state(planted(scattered(0.02)), "maximize")
    large = interval_state(planted(scattered(0.08)), "maximize")
    assert small["lower"] < B_CRIT < small["upper"] and large["lower"] < B_CRIT < large["upper"]
    assert large["rel_width"] / small["rel_width"] == pytest.approx(4.0, rel=0.15)
    # a wider level gives a wider interval from the same resamples
    wider = interval_state(planted(scattered(0.02)), "maximize", ci=0.99)
    assert wider["lower"] < small["lower"] and wider["upper"] > small["upper"]


def test_a_planted_frontier_with_exact_points_has_a_narrow_interval_and_stops():
    trials = planted({b: [1.0, 1.05, 1.1] for b in B})  # every trial within 10% of S(B)
    state = interval_state(trials, "maximize", resample="trials")
    assert state["b_crit"] == pytest.approx(B_CRIT, rel=1e-6)
    assert state["lower"] < B_CRIT < state["upper"]
    assert state["rel_width"] == pytest.approx(0.149, abs=0.01)
    # spread over 50% instead of 10%: the same point, an interval 4 times as wide
    wide = interval_state(planted({b: [1.0, 1.2, 1.5] for b in B}), "maximize",
                          resample="trials")
    assert wide["b_crit"] == pytest.approx(B_CRIT, rel=1e-6)
    assert wide["rel_width"] == pytest.approx(0.624, abs=0.01)
    decision, reason = stop_decision(state, trial_counts(trials, B), **RULE)
    assert decision == "stop" and "<= 0.5" in reason


def test_a_noisy_frontier_continues_and_says_how_wide():
    quality = {b: [1.0, 1.0, 1.0] for b in B}
    quality[16], quality[512] = [2.5, 1.0, 3.0], [1.0, 2.0, 2.2]
    trials = planted(quality)
    state = interval_state(trials, "maximize", resample="trials")
    assert state["rel_width"] > 0.5
    decision, reason = stop_decision(state, trial_counts(trials, B), **RULE)
    assert decision == "continue" and "> 0.5" in reason


@pytest.mark.parametrize("state,counts,rule,expected,words", [
    ({"b_crit": 60.0, "lower": 30.0, "upper": 90.0, "rel_width": 1.0, "lr_width": 0.1},
     dict.fromkeys(B, 6), {}, "stop", "budget spent: 42 of max_trials 40 trials; the interval "
     "rule did not hold: B_crit 60 [30, 90], relative width 1 > 0.5"),
    ({"b_crit": 60.0, "lower": 55.0, "upper": 65.0, "rel_width": 1 / 6, "lr_width": 0.1},
     dict.fromkeys(B, 6), {}, "stop", "relative width 0.1667 <= 0.5 (and the budget spent: "
     "42 of max_trials 40 trials)"),
    ({"b_crit": 60.0, "lower": 55.0, "upper": 65.0, "rel_width": 1 / 6, "lr_width": 0.1},
     {**dict.fromkeys(B, 3), 16: 2}, {}, "continue", "batch sizes [16] have fewer than"),
    ({"b_crit": 60.0, "lower": 55.0, "upper": math.inf, "rel_width": math.inf,
      "lr_width": 0.1}, dict.fromkeys(B, 3), {}, "continue", "relative width inf > 0.5"),
    ({"b_crit": math.nan, "lower": math.nan, "upper": math.nan, "rel_width": math.nan,
      "lr_width": math.nan, "reason": "2 batch sizes with steps > 0; the fit needs 3"},
     dict.fromkeys(B, 3), {}, "continue", "the fit needs 3"),
    ({"b_crit": 60.0, "lower": 55.0, "upper": 65.0, "rel_width": 1 / 6, "lr_width": 0.4},
     dict.fromkeys(B, 3), {"lr_exponent_width": 0.3}, "continue", "0.4 wide > 0.3"),
    ({"b_crit": 60.0, "lower": 55.0, "upper": 65.0, "rel_width": 1 / 6, "lr_width": 0.2},
     dict.fromkeys(B, 3), {"lr_exponent_width": 0.3}, "stop", "0.2 wide <= 0.3"),
])
def test_the_stop_rule(state, counts, rule, expected, words):
    decision, reason = stop_decision(state, counts, **{**RULE, **rule})
    assert decision == expected
    assert words in reason


def test_the_lr_exponent_width_comes_from_lr_scaling():
    rows = []
    for b in B:  # objective peaks at lr = 0.01 (B / 16)^0.5, a parabola in log lr
        for i, factor in enumerate([0.1, 0.3, 1.0, 3.0, 10.0]):
            lr = 0.01 * (b / 16) ** 0.5 * factor
            rows.append({"trial_id": f"{b}_{i}", "batch_size": b, "status": "ok",
                         "learning_rate": lr, "final_objective": 0.9 - 0.05 * math.log(factor) ** 2,
                         "reached_target": True, "steps_to_target": S_MIN * (1 + B_CRIT / b)})
    state = interval_state(pd.DataFrame(rows), "maximize", lr=True)
    assert state["lr_exponent"] == pytest.approx(0.5, abs=1e-6)
    assert 0 <= state["lr_width"] < 0.01


# ---------------------------------------------------------------------- the allocation rule

def test_the_influence_falls_on_the_noisy_batch_size():
    frame = interval_influence(planted(exact_but(64)), "maximize").set_index("batch_size")
    assert frame.loc[64, "influence"] > 0.05
    assert frame.loc[64, "spread_if_exact"] == 0.0  # every other point is exact
    assert (frame.drop(64)["influence"] == 0).all()


def test_a_batch_size_that_never_reached_the_target_has_no_influence():
    quality = exact_but(512)
    trials = planted(quality, reached={1024: [False, False, False]})
    frame = interval_influence(trials, "maximize").set_index("batch_size")
    assert frame.loc[1024, ["n_reached", "influence"]].tolist() == [0, 0]
    assert frame.loc[512, "influence"] > 0


def test_allocation_sends_the_round_to_the_influential_batch_size():
    trials = planted(exact_but(64))
    influence = interval_influence(trials, "maximize").set_index("batch_size")["influence"]
    added = allocate(trial_counts(trials, B), influence.to_dict(), 3, min_trials=3,
                     max_ratio=2.0, b_crit=B_CRIT)
    assert added == {**dict.fromkeys(B, 0), 64: 3}


def test_allocation_caps_a_batch_size_then_fills_the_nearest_to_b_crit():
    # 64 may reach 2 x 3 = 6 trials; the rest go to the least-tried batch sizes nearest to
    # B_crit = 60 in log2 B: 32 (0.91 doublings away), then 128 (1.09)
    added = allocate(dict.fromkeys(B, 3), {64: 0.2}, 5, min_trials=3, max_ratio=2.0,
                     b_crit=60.0)
    assert added == {**dict.fromkeys(B, 0), 64: 3, 32: 1, 128: 1}


def test_allocation_weighs_influence_by_the_noise_one_more_trial_removes():
    # gains: 16: 0.3 x 4 / (4 x 5) = 0.06; 256: 0.2 x 2 / (2 x 3) = 0.067 first, then
    # 256 at 3 trials: 0.2 x 2 / (3 x 4) = 0.033 < 0.06
    counts = {16: 4, 64: 4, 256: 2}
    added = allocate(counts, {16: 0.3, 256: 0.2}, 2, min_trials=2, max_ratio=3.0)
    assert added == {16: 1, 64: 0, 256: 1}


def test_allocation_fills_batch_sizes_below_min_trials_first():
    added = allocate({16: 1, 64: 3, 256: 2}, {64: 5.0}, 3, min_trials=3, max_ratio=2.0)
    assert added == {16: 2, 64: 0, 256: 1}


def test_allocation_without_influence_balances():
    added = allocate(dict.fromkeys(B, 3), {}, 7, min_trials=3, max_ratio=2.0, b_crit=100.0)
    assert added == dict.fromkeys(B, 1)


def test_balanced_allocation_ignores_influence_and_breaks_ties_nearest_b_crit():
    # least-tried first; among equals nearest B_crit = 60 in log2 B: 64 (0.09 doublings),
    # 32 (0.91), 128 (1.09); the influence on 1024 is not read
    added = allocate(dict.fromkeys(B, 3), {1024: 5.0}, 3, min_trials=3, max_ratio=2.0,
                     b_crit=60.0, rule="balanced")
    assert added == {**dict.fromkeys(B, 0), 64: 1, 32: 1, 128: 1}
    added = allocate({**dict.fromkeys(B, 3), 64: 4}, {}, 2, min_trials=3, max_ratio=2.0,
                     b_crit=60.0, rule="balanced")
    assert added == {**dict.fromkeys(B, 0), 32: 1, 128: 1}


def test_nearest_allocation_fills_the_batch_size_nearest_b_crit_up_to_the_cap():
    # 64 may reach 2 x 3 = 6 trials, then 32 (0.91 doublings from 60) takes the rest
    added = allocate(dict.fromkeys(B, 3), {}, 5, min_trials=3, max_ratio=2.0, b_crit=60.0,
                     rule="nearest")
    assert added == {**dict.fromkeys(B, 0), 64: 3, 32: 2}


def test_allocation_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match=r"allocation must be one of \['balanced', "
                                         r"'nearest', 'influence'\], got 'random'"):
        allocate(dict.fromkeys(B, 3), {}, 1, min_trials=3, max_ratio=2.0, rule="random")


# ---------------------------------------------------------------------- the level per look

def test_looks_and_the_bonferroni_level():
    # digits_adaptive: round 0 = 3 x 7 = 21 trials, 7 a round, 49 at most: 21, 28, 35, 42, 49
    assert looks_of(21, 7, 49) == 5
    assert look_level(0.95, 5, "bonferroni") == pytest.approx(0.99)
    assert look_level(0.95, 5, "none") == 0.95
    assert looks_of(21, 7, 50) == 6  # a last, smaller round is a look too
    assert looks_of(21, 7, 21) == 1 and look_level(0.95, 1, "bonferroni") == 0.95
    with pytest.raises(ValueError, match=r"adjust must be one of \['bonferroni', 'none'\]"):
        look_level(0.95, 5, "holm")


# ---------------------------------------------------------------------- spec and report

def _space(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 1.0, log=True)}


def _study(**kw):
    base = {"name": "a", "space": _space, "protocol": "per_batch_size", "batch_sizes": B[:3],
            "trials": 2, "stop_when": StopWhen(b_crit_rel_width=1.0, max_trials=12)}
    return Study(**{**base, **kw})


@pytest.mark.parametrize("kwargs,message", [
    ({"protocol": "joint", "batch_sizes": []}, "stop_when belongs to protocol 'adaptive', not"),
    ({"norms": ["batch", "layer"]}, "norms belongs to protocol 'per_batch_size' or 'per_norm'"),
    ({"batch_sizes": [16, 32]}, "at least 3 batch sizes"),
    ({"stop_when": StopWhen(b_crit_rel_width=1.0, max_trials=5)},
     "max_trials 5 is below round 0's 2 trials x 3 batch sizes = 6"),
])
def test_stop_when_settings_are_checked(kwargs, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        _study(**kwargs)


def test_stop_when_is_strict():
    with pytest.raises(ValidationError, match="b_crit_rel_width"):
        StopWhen(b_crit_rel_width=0.0, max_trials=10)
    with pytest.raises(ValidationError, match="extra"):
        StopWhen(b_crit_rel_width=1.0, max_trials=10, max_rounds=3)


def test_adaptive_preflight_rechecks_a_copied_study_and_needs_a_target():
    study = _study().model_copy(update={"trials": 5})  # as --trials makes it
    with pytest.raises(UserError, match="max_trials 12 is below round 0's 5 trials"):
        protocol_of(study).preflight(study, 0.9)
    with pytest.raises(UserError, match="stop_when needs a target"):
        protocol_of(_study()).preflight(_study(), None)


def test_the_copyable_spec_loads():
    study, _ = load_spec("search_spaces/digits_adaptive.py")
    assert study.stop_when.b_crit_rel_width == 1.0 and study.asha is not None
    assert study.total_trials == 21


def test_the_report_summary_counts_the_compute_and_the_uniform_sweep():
    trials = planted({16: [1.0] * 4, 64: [1.0] * 2, 256: [1.0] * 2})
    per = uniform_cost(trials).set_index("batch_size")
    assert per["trials"].to_dict() == {16: 4, 64: 2, 256: 2}
    assert (per["uniform_trials"] == 4).all()  # the most-tried batch size's count
    assert per.loc[64, "uniform_examples"] == 4 * 64_000
    meta = {"stop_when": {"b_crit_rel_width": 0.5},
            "adaptive_rounds": [
                {"round": 0, "added": {"16": 2, "64": 2, "256": 2}, "trials_total": 6,
                 "b_crit": 60.0, "lower": 30.0, "upper": 120.0, "rel_width": 1.5,
                 "lr_exponent": math.nan, "lr_width": math.nan, "decision": "continue",
                 "reason": "too wide"},
                {"round": 1, "added": {"16": 2}, "influence": {"64": 0.0, "16": 0.1234},
                 "trials_total": 8, "b_crit": 60.0,
                 "lower": 50.0, "upper": 70.0, "rel_width": 1 / 3, "decision": "stop",
                 "reason": "narrow"}]}
    summary = adaptive_summary(trials, meta)
    assert summary.rounds["added"].tolist() == ["16:2 64:2 256:2", "16:2"]
    assert summary.rounds["trials_added"].tolist() == [6, 2]
    assert summary.rounds["influence"].fillna("-").tolist() == ["-", "16:0.123 64:0"]
    assert summary.stopped == "stopped after round 1: narrow"
    assert summary.stop_when == {"b_crit_rel_width": 0.5}
    spent = summary.spent.set_index("what")
    assert spent.loc["adaptive (this study)", "trials"] == 8
    assert spent.loc["uniform sweep (estimated)", "trials"] == 12
    assert spent.loc["uniform sweep (estimated)", "examples"] == 4 * (16 + 64 + 256) * 1000
    assert adaptive_summary(trials, {}) is None


def test_rounds_table_of_json_round_trips_nan_and_inf():
    rounds = [{"round": 0, "added": {"16": 3}, "b_crit": 50.0, "lower": 10.0,
               "upper": math.inf, "rel_width": math.inf, "lr_width": math.nan}]
    table = rounds_table(json.loads(json.dumps(rounds)))
    assert table.loc[0, "upper"] == math.inf and math.isnan(table.loc[0, "lr_width"])


# ---------------------------------------------------------------------- the driver

def _planted_run_dir(run_dir, study, quality):
    """A run directory as round 0 of ``study`` leaves it: study.json, the tables of the
    planted trials (each in its cell's Optuna study, as run_study records them)."""
    import optuna

    from lbt_study.records.results import ResultsWriter
    from lbt_study.records.rundir import optuna_url

    run_dir.mkdir(exist_ok=True)
    (run_dir / "study.json").write_text(json.dumps({"name": study.name, "trials": 21,
                                                    "objective_direction": "maximize"}))
    writer = ResultsWriter(run_dir)
    for rec in planted(quality).to_dict("records"):
        writer.add_trial({**rec, "optuna_study": f"{study.name}/B={rec['batch_size']}"})
    writer.flush()
    for cell in study.cells():
        optuna.create_study(study_name=cell.study_name, storage=optuna_url(run_dir))


def test_the_driver_records_a_round_and_stops_on_its_interval_without_running_more(tmp_path):
    from lbt_study.records.record import StudyRecord
    from lbt_study.study.rounds import run_adaptive

    study = _study(batch_sizes=B, trials=3,
                   stop_when=StopWhen(b_crit_rel_width=0.5, max_trials=40, min_trials=3))
    _planted_run_dir(tmp_path, study, scattered(0.02))
    meta = StudyRecord.raw(tmp_path)
    meta["adaptive_rounds"] = [{"round": 0, "added": {str(b): 3 for b in B}}]
    (tmp_path / "study.json").write_text(json.dumps(meta))  # round 0 ran; not yet decided
    lines = []
    table = run_adaptive(study, tmp_path, "maximize", target=0.9, progress=lines.append,
                         fresh=False)
    assert table[["round", "trials_total", "decision"]].values.tolist() == [[0, 21, "stop"]]
    # 4 looks at most (21, 28, 35, 40 trials): each at 1 - 0.05 / 4 = 0.9875, Bonferroni
    expected = interval_state(planted(scattered(0.02)), "maximize", ci=0.9875)
    assert table.loc[0, "level"] == pytest.approx(0.9875)
    assert table.loc[0, "rel_width"] == pytest.approx(expected["rel_width"], rel=1e-9)
    assert 0.1 < expected["rel_width"] < 0.5
    recorded = StudyRecord.raw(tmp_path)
    assert recorded["adaptive_rounds"][0]["decision"] == "stop"
    assert recorded["stop_when"]["b_crit_rel_width"] == 0.5
    assert pd.read_csv(tmp_path / "adaptive_rounds.csv")["decision"].tolist() == ["stop"]
    assert "adaptive round 0: 21 trials" in lines[-1] and "-> stop: B_crit 6" in lines[-1]
    assert "(0.9875 interval)" in lines[-1]
    assert "at level 0.9875 (bonferroni)" in lines[0] and "(balanced)" in lines[0]
    import ray

    assert not ray.is_initialized()  # nothing was left to run: Ray was never started


def test_the_driver_plans_a_balanced_round_when_the_interval_is_wide(tmp_path):
    from lbt_study.study.rounds import _decide, _next_round, _Run

    rule = StopWhen(b_crit_rel_width=0.5, max_trials=40, min_trials=3, round_trials=3)
    study = _study(batch_sizes=B, trials=3, stop_when=rule)
    _planted_run_dir(tmp_path, study, scattered(0.2))  # frontier 20% off the curve
    run = _Run(study, rule, tmp_path, "maximize", {"storage": None}, lambda _: None)
    rounds = [{"round": 0, "added": {str(b): 3 for b in B}}]
    _decide(run, rounds)
    # looks at 21, 24, ..., 39, 40 trials: 8, each at 1 - 0.05 / 8
    assert rounds[0]["level"] == pytest.approx(1 - 0.05 / 8)
    assert rounds[0]["decision"] == "continue" and rounds[0]["rel_width"] > 0.5
    nxt = _next_round(run, rounds)
    # balanced: every batch size has 3; ties go nearest the estimate (about 60): 64, 32, 128
    assert nxt["added"] == {**{str(b): 0 for b in B}, "64": 1, "32": 1, "128": 1}
    assert nxt["influence"] == {}  # the influence is computed only for allocation="influence"


# ---------------------------------------------------------------------- a real study

TINY_SPEC = '''
from lbt_study import StopWhen, Study

def space(trial):
    return {"lr": trial.suggest_float("lr", 0.05, 0.5, log=True)}

study = Study(name="tiny-adaptive", space=space, protocol="per_batch_size",
              batch_sizes=[16, 64, 256, 1024], trials=2, target=0.5,
              stop_when=StopWhen(b_crit_rel_width=50.0, max_trials=16, min_trials=3),
              fixed={"model": "mlp", "norm": "layer", "epochs": 4, "gns_probe_examples": 0,
                     "measure_flops": False, "precise_bn": False})
'''


@pytest.mark.slow
@pytest.mark.ray
def test_a_real_adaptive_study_adds_a_round_and_stops_on_its_interval(tmp_path, write_spec):
    """Round 0 (2 trials per B) is below min_trials, so round 1 adds one trial at every B;
    then the interval rule decides (about 3 minutes on 2 busy cores)."""
    from lbt_study.cli import main
    from lbt_study.records.record import StudyRecord
    from lbt_study.records.results import load_results

    spec, run_dir = write_spec(TINY_SPEC), tmp_path / "run"
    assert main(["run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2"]) == 0
    rounds = StudyRecord.raw(run_dir)["adaptive_rounds"]
    assert [r["decision"] for r in rounds] == ["continue", "stop"]
    assert "fewer than min_trials 3" in rounds[0]["reason"]
    assert rounds[1]["added"] == {"16": 1, "64": 1, "256": 1, "1024": 1}
    assert "<= 50" in rounds[1]["reason"] and rounds[1]["rel_width"] <= 50
    trials, _ = load_results(run_dir)
    assert trials.groupby("batch_size").size().to_dict() == {16: 3, 64: 3, 256: 3, 1024: 3}
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Adaptive study: rounds and compute" in report
    assert (run_dir / "report" / "adaptive_width.png").is_file()
    # resume of a finished adaptive study: nothing to run, the rounds stay
    assert main(["resume", str(run_dir), "--no-report"]) == 0
    again = StudyRecord.raw(run_dir)["adaptive_rounds"]
    assert [(r["round"], r["trials_total"], r["decision"]) for r in again] == \
        [(r["round"], r["trials_total"], r["decision"]) for r in rounds]
    assert len(load_results(run_dir)[0]) == 12


def test_the_cli_refuses_a_budget_that_round_0_exceeds_in_one_line(tmp_path, write_spec,
                                                                     capsys):
    from lbt_study.cli import main

    spec = write_spec(TINY_SPEC)
    run_dir = tmp_path / "never"
    assert main(["run", str(spec), "--trials", "5", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("lbt-study: error: stop_when.max_trials 16 is below round 0's 5 trials x 4 "
                   "batch sizes = 20")
    assert not run_dir.exists()  # refused before anything was made
    broken = write_spec(TINY_SPEC.replace("max_trials=16", "max_trials=4"), "broken.py")
    assert main(["run", str(broken), "--run-dir", str(run_dir)]) == 2
    assert "max_trials 4 is below round 0's 2 trials x 4 batch sizes = 8" in \
        capsys.readouterr().err
