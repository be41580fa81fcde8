"""Adam-era scaling (issue 23, part 3): beta2's half-life rule and AdamW's timescale tau."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lbt_study.train import run_training
from lbt_study.train.batching import adam_beta2, adamw_tau_epochs
from lbt_study.train.config import TrainConfig
from lbt_study.train.setup import assemble

BASE = {"workload": "digits", "norm": "layer", "optimizer": "adamw", "lr": 0.003,
        "weight_decay": 0.1, "beta2": 0.99, "beta2_ref_batch_size": 16, "epochs": 0.2}


def test_the_half_life_rule_keeps_the_half_life_in_examples():
    def half_life_examples(b: int) -> float:
        beta2 = adam_beta2(TrainConfig(**{**BASE, "batch_size": b, "beta2_rule": "half_life"}))
        return math.log(0.5) / math.log(beta2) * b

    assert adam_beta2(TrainConfig(**{**BASE, "batch_size": 64})) == 0.99  # fixed
    assert adam_beta2(TrainConfig(**{**BASE, "batch_size": 64, "beta2_rule": "half_life"})) \
        == pytest.approx(0.99 ** 4)
    lives = [half_life_examples(b) for b in (16, 64, 256, 1024)]
    assert lives == pytest.approx([lives[0]] * 4, rel=1e-9)
    assert lives[0] == pytest.approx(math.log(0.5) / math.log(0.99) * 16)


def test_the_optimizer_gets_the_rule_s_beta2():
    cfg = TrainConfig(**{**BASE, "batch_size": 128, "beta2_rule": "half_life"})
    parts = assemble(cfg, torch.device("cpu"))
    assert parts.opt.param_groups[0]["betas"] == (0.9, pytest.approx(0.99 ** 8))


def test_tau_and_beta2_are_recorded_per_trial():
    rows: list[dict] = []
    run_training(TrainConfig(**{**BASE, "batch_size": 64, "beta2_rule": "half_life"}),
                 rows.append)
    last = rows[-1]
    assert last["adam_beta2"] == pytest.approx(0.99 ** 4)
    assert last["adamw_tau_epochs"] == pytest.approx(64 / (0.003 * 0.1 * 1437))
    sgd = TrainConfig(**{**BASE, "optimizer": "sgd", "batch_size": 64})
    assert math.isnan(adamw_tau_epochs(sgd, 0.003, 1437))
    assert math.isnan(adamw_tau_epochs(TrainConfig(**{**BASE, "batch_size": 64,
                                                       "weight_decay": 0.0}), 0.003, 1437))


def test_bad_beta_settings_are_refused():
    with pytest.raises(ValueError, match="beta2_rule"):
        TrainConfig(**{**BASE, "batch_size": 64, "beta2_rule": "tokens"})
    with pytest.raises(ValueError, match="beta2"):
        TrainConfig(**{**BASE, "batch_size": 64, "beta2": 1.0})


def _adam_trials() -> pd.DataFrame:
    rows = []
    for rule, factor in (("fixed", 1.0), ("half_life", 2.0)):
        for b in (16, 64, 256):
            for i in range(3):
                steps = 100.0 * (16 / b) ** 0.5 * (factor if b == 16 else 1.0) * (1 + 0.01 * i)
                rows.append({"trial_id": f"{rule}{b}_{i}", "status": "ok", "batch_size": b,
                             "optimizer": "adamw", "beta2_rule": rule, "final_objective": 0.96,
                             "reached_target": True, "steps_to_target": steps,
                             "adam_beta2": 0.95 if rule == "fixed" or b == 256 else 0.99,
                             "adamw_tau_epochs": float(b)})
    return pd.DataFrame(rows)


def test_rule_comparison_finds_the_faster_rule_and_the_reference_batch_size():
    from lbt_study.analysis.adam import adam_scaling

    adam = adam_scaling(_adam_trials(), "maximize", 0.95, None)
    table = adam.table.set_index(["beta2_rule", "batch_size"])
    assert table.loc[("half_life", 16), "steps"] == pytest.approx(200.0)
    assert table.loc[("fixed", 64), "adamw_tau_epochs"] == 64.0
    comp = adam.comparison.set_index("batch_size")
    assert comp.loc[16, "faster"] == "fixed"  # 2x slower under half_life, beyond 1.02x
    assert not isinstance(comp.loc[64, "faster"], str)  # equal within the interval
    assert comp["same_beta2"].tolist() == [False, False, True]


def test_the_surge_is_flagged_only_when_lr_opt_falls_beyond_its_interval():
    from lbt_study.analysis.adam import lr_surge

    def points(lrs, width=0.1):
        return pd.DataFrame({"batch_size": [16, 64, 256, 1024], "lr_opt": lrs,
                             "lr_opt_lower": [x * (1 - width) for x in lrs],
                             "lr_opt_upper": [x * (1 + width) for x in lrs],
                             "edge": [False] * 4})

    said = lr_surge(points([0.001, 0.004, 0.008, 0.003]))
    assert said is not None and "peaks at B = 256" in said and "B = 1024" in said
    assert lr_surge(points([0.001, 0.002, 0.004, 0.008])) is None
    assert lr_surge(points([0.001, 0.004, 0.008, 0.0075])) is None  # within the interval


def test_the_adamw_spec_passes_preflight():
    from pathlib import Path

    from lbt_study.study.preflight import check_study
    from lbt_study.study.spec import load_spec

    study, _ = load_spec(Path(__file__).resolve().parent.parent / "search_spaces" /
                         "digits_adamw.py")
    check_study(study, samples=16)
    assert study.fixed["optimizer"] == "adamw" and study.total_trials == 32
