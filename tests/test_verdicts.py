"""Which rules held (issue 23, part 2): the verdicts on planted tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lbt_study.analysis.lr import lr_scaling
from lbt_study.analysis.verdicts import (
    HELD,
    NOT_HELD,
    UNSURE,
    UNTESTED,
    ghost_row,
    hybrid_row,
    sign_verdict,
    verdicts,
)

BATCH = (16, 32, 64, 128, 256, 512, 1024)


def planted(k: float, seed: int = 0, optimizer: str = "sgd") -> pd.DataFrame:
    """Objective parabolas in ln lr, peak at lr*(B) = 0.01 (B/16)^k, small noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in BATCH:
        best = 0.01 * (b / 16) ** k
        for i, lr in enumerate(best * np.exp(np.linspace(-1.5, 1.5, 9))):
            obj = 0.95 - 0.05 * np.log(lr / best) ** 2 + rng.normal(0, 0.002)
            rows.append({"trial_id": f"t{b}_{i}", "status": "ok", "batch_size": b,
                         "learning_rate": lr, "final_objective": obj, "optimizer": optimizer,
                         "norm": "batch"})
    return pd.DataFrame(rows)


def table(trials: pd.DataFrame) -> pd.DataFrame:
    lr = lr_scaling(trials, "maximize", warmup_col=None)
    return verdicts(trials, lr, None, None, "no probe", n_boot=200).set_index("claim")


SQRT = "the optimal learning rate grows as sqrt(B) (SGD)"
LINEAR = "the optimal learning rate grows linearly with B (SGD)"
ADAM = "the optimal learning rate grows as sqrt(B) (Adam)"


def test_a_square_root_optimum_gives_square_root_rule_held():
    v = table(planted(0.5))
    assert v.loc[SQRT, "verdict"] == HELD and v.loc[LINEAR, "verdict"] == NOT_HELD
    assert v.loc[SQRT, "value"] == pytest.approx(0.5, abs=0.03)
    assert v.loc[ADAM, "verdict"] == UNTESTED and "Adam or AdamW" in v.loc[ADAM, "why"]
    warmup = v.loc["warmup is constant in epochs"]
    assert warmup["verdict"] == UNTESTED and warmup["why"].startswith(
        "warmup_epochs was not varied (none)")


def test_a_linear_optimum_gives_linear_rule_held():
    v = table(planted(1.0))
    assert v.loc[LINEAR, "verdict"] == HELD and v.loc[SQRT, "verdict"] == NOT_HELD


def test_adam_studies_are_judged_on_the_adam_rule():
    v = table(planted(0.5, optimizer="adamw"))
    assert v.loc[ADAM, "verdict"] == HELD and v.loc[SQRT, "verdict"] == UNTESTED
    assert v.loc["the noise scale B_simple predicts B_crit", "why"] == "no probe"


def test_sign_verdicts():
    assert sign_verdict(-0.3, -0.1, positive=False) == HELD
    assert sign_verdict(0.1, 0.3, positive=False) == NOT_HELD
    assert sign_verdict(-0.1, 0.3, positive=False) == UNSURE
    assert sign_verdict(0.1, 0.3, positive=True) == HELD


def gaps(ghost_shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for b in BATCH:
        for norm, shift in (("batch", 0.0), ("ghost_batch", ghost_shift)):
            for i in range(5):
                rows.append({"batch_size": b, "norm": norm, "trial_id": f"{norm}{b}_{i}",
                             "gap_accuracy_at_target": 0.02 * np.log2(b / 16) / 6 + shift
                             + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_ghost_bn_closing_the_gap_is_measured_at_the_large_batch_sizes():
    closes = ghost_row(gaps(-0.01), 300, 0, 0.95)
    assert closes["verdict"] == HELD and closes["value"] == pytest.approx(-0.01, abs=0.002)
    assert ghost_row(gaps(0.01), 300, 0, 0.95)["verdict"] == NOT_HELD
    assert ghost_row(gaps(0.0), 300, 0, 0.95)["verdict"] == UNSURE
    assert ghost_row(gaps(0.0).query("norm == 'batch'"), 300, 0, 0.95)["verdict"] == UNTESTED


def test_hybrid_alpha_slope():
    rows = [{"batch_size": b, "hybrid_alpha": 0.4 + 0.05 * np.log(b) + 0.01 * (i - 1)}
            for b in BATCH for i in range(3)]
    row = hybrid_row(pd.DataFrame(rows), 300, 0, 0.95)
    assert row["verdict"] == HELD and row["value"] == pytest.approx(0.05, abs=1e-9)
    assert hybrid_row(pd.DataFrame(rows).assign(hybrid_alpha=np.nan), 300, 0,
                      0.95)["verdict"] == UNTESTED
