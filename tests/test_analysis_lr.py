"""lr_scaling: planted power laws recovered, and checked against an independent OLS by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lbt_study.analysis import lr_scaling

POWERS = 2 ** np.arange(4, 13)  # 16 .. 4096


def sweep(best_lr: np.ndarray, warmup: np.ndarray | None = None) -> pd.DataFrame:
    """Three trials per batch size at best_lr / 2, best_lr, 2 best_lr; the middle one scores
    best. Plus a diverged trial with the highest score at every batch size, to be ignored."""
    rows = []
    for i, (batch, lr) in enumerate(zip(POWERS, best_lr, strict=True)):
        for factor, score, status in ((0.5, 0.80, "ok"), (1.0, 0.90, "ok"), (2.0, 0.85, "ok"),
                                      (8.0, 0.99, "diverged")):
            rows.append({"trial_id": f"{batch}-{factor}", "status": status,
                         "batch_size": int(batch), "learning_rate": lr * factor,
                         "warmup_epochs": 1.0 if warmup is None else warmup[i],
                         "final_objective": score})
    return pd.DataFrame(rows)


def ols_by_hand(x: np.ndarray, y: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """Slope of log y on log x and its t interval, from the textbook formulas."""
    lx, ly = np.log(x), np.log(y)
    sxx = np.sum((lx - lx.mean()) ** 2)
    slope = np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx
    residuals = ly - ly.mean() - slope * (lx - lx.mean())
    stderr = math.sqrt(np.sum(residuals**2) / (len(x) - 2) / sxx)
    half = stats.t.ppf((1 + ci) / 2, len(x) - 2) * stderr
    return slope, slope - half, slope + half


def test_planted_exponent_recovered_and_rules_excluded():
    rng = np.random.default_rng(0)
    best_lr = 0.01 * POWERS**0.7 * np.exp(0.02 * rng.standard_normal(len(POWERS)))
    got = lr_scaling(sweep(best_lr), "maximize")
    fit = got.fits.set_index("parameter").loc["learning_rate"]
    assert fit["exponent"] == pytest.approx(0.7, abs=0.05)
    assert fit["exponent_lower"] < 0.7 < fit["exponent_upper"]
    assert not fit["linear_rule_in_ci"] and not fit["sqrt_rule_in_ci"]
    assert not fit["constant_in_ci"]
    assert fit["n_points"] == 9
    slope, lower, upper = ols_by_hand(POWERS, best_lr)
    assert (fit["exponent"], fit["exponent_lower"], fit["exponent_upper"]) == pytest.approx(
        (slope, lower, upper), rel=1e-10)
    assert got.points["learning_rate"].to_numpy() == pytest.approx(best_lr)
    assert (got.points["final_objective"] == 0.90).all()  # diverged trials ignored


def test_linear_rule_with_noise_is_in_the_interval():
    rng = np.random.default_rng(1)
    best_lr = 0.001 * POWERS * np.exp(0.3 * rng.standard_normal(len(POWERS)))
    fit = lr_scaling(sweep(best_lr), "maximize").fits.iloc[0]
    assert bool(fit["linear_rule_in_ci"]) == (fit["exponent_lower"] <= 1 <= fit["exponent_upper"])
    assert fit["linear_rule_in_ci"]


def test_warmup_fit_leaves_out_trials_without_warmup():
    warmup = np.where(POWERS >= 64, 0.5 * POWERS**0.5, 0.0)
    got = lr_scaling(sweep(0.01 * POWERS, warmup), "maximize")
    fit = got.fits.set_index("parameter").loc["warmup_epochs"]
    assert fit["exponent"] == pytest.approx(0.5, abs=1e-12)
    assert fit["coefficient"] == pytest.approx(0.5)
    assert fit["n_points"] == 7
    assert fit["sqrt_rule_in_ci"] and not fit["linear_rule_in_ci"]
    assert fit["reason"] == ("2 of 9 best trials left out (warmup_epochs or batch_size missing "
                             "or not > 0)")


def test_two_batch_sizes_give_an_exponent_but_no_interval():
    table = sweep(0.01 * POWERS)
    table = table[table["batch_size"].isin([16, 64])]
    fit = lr_scaling(table, "maximize", warmup_col=None).fits
    assert len(fit) == 1
    assert fit["exponent"].iloc[0] == pytest.approx(1.0)
    assert math.isnan(fit["exponent_lower"].iloc[0])
    assert pd.isna(fit["linear_rule_in_ci"].iloc[0])
    assert "no interval" in fit["reason"].iloc[0]


def test_one_batch_size_or_none_gives_nan_and_a_reason():
    table = sweep(0.01 * POWERS)
    fits = lr_scaling(table[table["batch_size"] == 16], "maximize").fits
    assert fits["exponent"].isna().all()
    assert (fits["reason"] == "1 batch sizes to fit; k needs 2").all()


def test_missing_warmup_column_is_a_reason_not_an_error():
    fits = lr_scaling(sweep(0.01 * POWERS).drop(columns="warmup_epochs"), "maximize").fits
    assert fits["exponent"].iloc[0] == pytest.approx(1.0)
    assert fits["reason"].iloc[1] == "the trials table has no 'warmup_epochs' column"
    assert math.isnan(fits["exponent"].iloc[1])


def test_lr_scaling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not 'max'"):
        lr_scaling(sweep(0.01 * POWERS), "max")
    with pytest.raises(ValueError, match="no column 'lr'"):
        lr_scaling(sweep(0.01 * POWERS), "maximize", lr_col="lr")
