"""Budgets: what every batch size gets the same of (epochs, steps, examples or seconds), and
the distance the weights travel from initialisation (Hoffer et al. 2017)."""

import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lbt_study.errors import UserError
from lbt_study.train import run_training
from lbt_study.train.batching import BatchSchedule
from lbt_study.train.config import TrainConfig, parse_config
from lbt_study.train.setup import build_model
from lbt_study.train.workload import get_workload

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402


def schedule(**values):
    return BatchSchedule.build(TrainConfig(**{"lr": 0.1, **values}), 1000)


def test_a_steps_budget_gives_every_batch_size_the_same_updates():
    for b in (16, 64, 256):
        s = schedule(batch_size=b, budget="steps", budget_steps=50)
        assert s.total_steps == 50 and s.examples_after[-1] == 50 * b
    # epochs: the same examples, so 4x the batch takes 4x fewer steps (ceil(2000 / B))
    assert [schedule(batch_size=b, epochs=2).total_steps for b in (16, 64, 256)] == [125, 32, 8]
    assert schedule(batch_size=64, budget="examples", budget_examples=1000).total_steps == 16
    grown = schedule(batch_size=10, budget="steps", budget_steps=10, batch_growth="0.5:2")
    assert grown.step_batch == (10,) * 5 + (20,) * 5


@pytest.mark.parametrize("values,words", [
    ({"budget": "steps"}, "budget 'steps' needs budget_steps"),
    ({"budget": "steps", "budget_steps": 10, "epochs": 3},
     "budget 'steps' is set by budget_steps; epochs (got 3.0) belongs to budget 'epochs'"),
    ({"budget_steps": 10}, "budget 'epochs' does not use budget_steps (got 10)"),
    ({"budget": "examples", "budget_examples": 100, "budget_steps": 5},
     "budget 'examples' does not use budget_steps (got 5)"),
    ({"budget": "seconds"}, "budget 'seconds' needs budget_seconds"),
    ({"budget_seconds": 2.0}, "budget 'epochs' does not use budget_seconds (got 2.0)"),
])
def test_a_budget_takes_its_own_setting_and_no_other(values, words):
    with pytest.raises(UserError, match="invalid trial config") as info:
        parse_config({"batch_size": 32, "lr": 0.1, **values})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_weight_distance_is_the_distance_from_the_seeded_initialisation():
    cfg = TrainConfig(model="mlp", norm="layer", batch_size=64, lr=0.05, epochs=1.0,
                      gns_probe_examples=0)
    rows = []
    outcome = run_training(cfg, rows.append)
    assert rows[0]["weight_distance"] == 0.0
    start = build_model(cfg, get_workload("digits"), torch.device("cpu"))  # independent
    by_hand = math.sqrt(sum(float((a.detach().double() - b.detach().double()).pow(2).sum())
                            for a, b in zip(outcome.model.parameters(), start.parameters(),
                                            strict=True)))
    assert rows[-1]["weight_distance"] == pytest.approx(by_hand, rel=1e-12)
    distances = [r["weight_distance"] for r in rows]
    assert by_hand > 0.1 and distances == sorted(distances)  # it only grows here


SECONDS = {"model": "mlp", "norm": "layer", "batch_size": 16, "lr": 0.05, "budget": "seconds",
           "budget_seconds": 0.4, "epochs": 200.0, "gns_probe_examples": 0}


def test_a_seconds_budget_ends_training_when_its_training_seconds_are_spent():
    rows = []
    outcome = run_training(TrainConfig(**SECONDS), rows.append)
    last = rows[-1]
    cap = schedule(**{k: v for k, v in SECONDS.items() if k != "lr"}).total_steps
    assert outcome.status == "ok" and last["status"] == "ok"
    assert 10 < outcome.steps < cap / 10  # stopped by the clock, long before the epoch cap
    # the first step that took training time past the budget is the last one
    assert last["train_seconds"] >= 0.4
    assert last["train_seconds"] < 0.4 + 0.2
    assert last["step"] == outcome.steps and last["examples_seen"] == 16 * outcome.steps


def test_two_workers_agree_on_when_a_seconds_budget_is_spent(tmp_path):
    config = {**SECONDS, "batch_size": 32, "workers": 2}
    per_rank = _ddp.spawn(_ddp.train_worker, tmp_path, [config])
    results = [r[0] for r in per_rank]
    assert all("error" not in r for r in results), results
    steps = {r["steps"] for r in results}
    assert len(steps) == 1 and 10 < steps.pop() < 5000  # one decision, from both clocks
    assert max(r["rows"][-1]["train_seconds"] for r in results) >= 0.4


# --- a study that runs several budgets, and the report's comparison ---------------------------

def budgets_study(**extra):
    from lbt_study.study.spec import Study

    values = {"name": "b", "space": lambda t: {}, "protocol": "per_batch_size",
              "batch_sizes": [16, 64], "fixed": {"lr": 0.1},
              "budgets": [{"budget": "epochs", "epochs": 4},
                          {"budget": "steps", "budget_steps": 360}], **extra}
    return Study(**values)


def test_every_batch_size_runs_under_every_budget():
    cells = budgets_study().cells()
    assert [c.study_name for c in cells] == ["b/B=16/budget=epochs", "b/B=16/budget=steps",
                                             "b/B=64/budget=epochs", "b/B=64/budget=steps"]
    assert cells[3].overrides == {"batch_size": 64, "budget": "steps", "budget_steps": 360}
    assert budgets_study().total_trials == 4 * 20


@pytest.mark.parametrize("extra,words", [
    ({"budgets": [{"budget_steps": 3}]}, "each of budgets names its 'budget'"),
    ({"budgets": [{"budget": "steps", "lr": 3}]}, "sets only"),
    ({"budgets": [{"budget": "steps", "budget_steps": 3}, {"budget": "steps",
                                                          "budget_steps": 9}]},
     "budgets repeats a budget: ['steps', 'steps']"),
    ({"fixed": {"lr": 0.1, "epochs": 3}}, "budgets sets ['epochs'] for every trial"),
])
def test_a_budgets_list_is_checked(extra, words):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(words)):
        budgets_study(**extra)


def test_budgets_need_the_per_batch_size_protocol():
    from pydantic import ValidationError

    from lbt_study.study.spec import Study

    with pytest.raises(ValidationError, match="budgets belongs to protocol 'per_batch_size'"):
        Study(name="x", space=lambda t: {}, budgets=[{"budget": "epochs", "epochs": 2}])


def gap_rows(excess: dict[str, float]) -> pd.DataFrame:
    """A gap_by_norm frame: under each budget the gap rises linearly in log2 B by ``excess``
    from 0.01 at B=16 to 0.01 + excess at B=1024."""
    rows = []
    for budget, rise in excess.items():
        for i, b in enumerate((16, 64, 256, 1024)):
            rows.append({"gap": "final_gap_accuracy", "norm": "layer", "budget": budget,
                         "batch_size": b, "gap_median": 0.01 + rise * i / 3})
    rows.append({"gap": "final_gap_accuracy", "norm": "batch", "budget": "steps",
                 "batch_size": 16, "gap_median": 0.5})  # one batch size: left out
    return pd.DataFrame(rows)


def test_the_large_batch_gap_per_budget_is_largest_minus_smallest():
    from lbt_study.analysis.budgets import large_batch_gap

    got = large_batch_gap(gap_rows({"epochs": 0.12, "steps": 0.03})).set_index("budget")
    assert list(got.index) == ["epochs", "steps"]
    assert got.loc["epochs", "excess_gap"] == pytest.approx(0.12)
    assert got.loc["steps", "excess_gap"] == pytest.approx(0.03)
    assert got.loc["steps", "largest_batch_size"] == 1024
    assert got.loc["epochs", "gap_at_smallest"] == pytest.approx(0.01)


def test_budget_labels_say_each_budget_with_its_setting():
    from lbt_study.analysis.budgets import budgets_used

    trials = pd.DataFrame({"budget": ["epochs", "steps", "steps", "seconds"],
                           "epochs": [4.0, 10.0, 10.0, 50.0],
                           "budget_steps": [None, 360, 360, None],
                           "budget_seconds": [None, None, None, 2.5]})
    got = budgets_used(trials).set_index("budget")
    assert got.loc["steps", "setting"] == "steps: 360 updates"
    assert got.loc["steps", "n_trials"] == 2
    assert got.loc["epochs", "setting"] == "epochs: 4 epochs"
    assert got.loc["seconds", "setting"] == "seconds: 2.5 s of training (at most 50 epochs)"


def test_the_report_names_the_budgets_and_compares_their_gaps(tmp_path):
    from test_report import make_run, planted_history, planted_trials

    from lbt_study.report import write_report

    epochs, steps = planted_trials(), planted_trials()
    epochs["budget"], epochs["epochs"] = "epochs", 8.0
    steps["budget"], steps["budget_steps"] = "steps", 500
    steps["trial_id"] = "u" + steps["trial_id"]
    # epochs: the gap grows 0.01 per doubling of B; steps: flat at the smallest B's value
    growth = epochs["batch_size"].map({32: 0, 64: 1, 128: 2, 256: 3, 512: 4}) * 0.01
    epochs["final_gap_accuracy"] = 0.01 + growth
    steps["final_gap_accuracy"] = 0.01
    trials = pd.concat([epochs, steps], ignore_index=True)
    paths = write_report(make_run(tmp_path / "run", trials, planted_history(trials), {}))
    page = paths.markdown.read_text()
    assert "| budget | epochs: 8 epochs (10 trials); steps: 500 updates (10 trials); the best" \
        in page
    got = pd.read_csv(paths.tables["gap_by_budget"])
    got = got[(got["gap"] == "final_gap_accuracy")].set_index(["norm", "budget"])
    # the median over a norm's trials at each B: batch norm and layer norm both 0.01 + growth
    assert got.loc[("batch", "epochs"), "excess_gap"] == pytest.approx(0.04)
    assert got.loc[("layer", "steps"), "excess_gap"] == pytest.approx(0.0)
    assert "| layer | epochs | 0.01 | 0.02 | 0.03 | 0.04 | 0.05 |" in page  # gap by norm
