"""Budgets: what every batch size gets the same of (epochs, steps or examples), and the
distance the weights travel from initialisation (Hoffer et al. 2017)."""

import math

import pytest
import torch

from lbt_study.batching import BatchSchedule
from lbt_study.config import TrainConfig, parse_config
from lbt_study.errors import UserError
from lbt_study.train import run_training
from lbt_study.train.setup import build_model
from lbt_study.workload import get_workload


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
