"""The learning-rate exponent under the default design with a curvature that grows with the
batch size (issue 21): planted parabolas, true k = 0.5, coverage of the profile interval
measured over stated numbers of studies, the bias of the shared-curvature fit it replaces,
the F test of a shared curvature, the verdict's words, and the warmup tie."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import qmc

from lbt_study.analysis import lr_scaling
from lbt_study.report.sections.lr import verdict

BATCHES = 2 ** np.arange(4, 11)  # 16 .. 1024, as search_spaces/digits.py
BASE_LR = (0.002, 0.2)  # base_lr searched log-uniformly, lr = base_lr (B / 256)^0.5
GROWING = -np.geomspace(0.002, 0.3, len(BATCHES))  # curvature per (ln lr)^2: 150x over B
NOISE = 0.011  # 1.1 accuracy points
TRUE_K = 0.5


def default_design(seed: int, k: float = TRUE_K, curvature: np.ndarray = GROWING,
                   per_batch: int = 5, noise: float = NOISE,
                   warmup: bool = False) -> pd.DataFrame:
    """The default design: the same ``per_batch`` scrambled-Sobol points at every batch
    size (base_lr, and warmup_epochs in 0..1 when ``warmup``), accuracy 0.95 + q_B
    (ln lr - ln lr*(B))^2 + N(0, noise), lr*(B) = 0.03 (B / 256)^k."""
    rng = np.random.default_rng(seed)
    points = qmc.Sobol(2, scramble=True, seed=seed).random(8)[:per_batch]
    base = np.exp(np.log(BASE_LR[0]) + points[:, 0] * np.log(BASE_LR[1] / BASE_LR[0]))
    rows = []
    for q, batch in zip(curvature, BATCHES, strict=True):
        lr = base * (batch / 256) ** 0.5
        star = 0.03 * (batch / 256) ** k
        score = 0.95 + q * np.log(lr / star) ** 2 + noise * rng.standard_normal(per_batch)
        for i in range(per_batch):
            rows.append({"trial_id": f"{batch}-{i}", "status": "ok", "batch_size": int(batch),
                         "base_lr": base[i], "learning_rate": lr[i],
                         "warmup_epochs": points[i, 1] if warmup else 0.0,
                         "final_objective": score[i]})
    return pd.DataFrame(rows)


def lr_row(trials: pd.DataFrame) -> pd.Series:
    return lr_scaling(trials, "maximize", warmup_col=None).fits.iloc[0]


def replicate(seeds: range, **design) -> pd.DataFrame:
    return pd.DataFrame([lr_row(default_design(seed, **design)) for seed in seeds])


def test_free_curvature_fit_is_unbiased_where_the_shared_fit_is_not():
    """40 planted studies: the free-curvature k averages 0.5 within 0.02 and its interval
    covers 0.5 in at least 35 (measured: 38); the shared-curvature k of the same trials, the
    old method, averages 0.82 (off by more than 0.2), so a test of it fails."""
    fits = replicate(range(40))
    assert (fits["method"] == "free_curvature_profile").all()
    assert fits["exponent"].mean() == pytest.approx(TRUE_K, abs=0.02)
    covered = (fits["exponent_lower"] <= TRUE_K) & (fits["exponent_upper"] >= TRUE_K)
    assert covered.sum() >= 35
    assert abs(fits["exponent_shared_curvature"].mean() - TRUE_K) > 0.2


@pytest.mark.slow
def test_profile_interval_covers_the_planted_k_in_400_default_design_studies():
    """Nominal 95%: covered in at least 93% of 400 planted studies (measured: 95.0%, seeds
    1000-1399; about 90 s)."""
    fits = replicate(range(1000, 1400))
    covered = (fits["exponent_lower"] <= TRUE_K) & (fits["exponent_upper"] >= TRUE_K)
    assert covered.mean() >= 0.93, covered.mean()


def test_shared_curvature_f_test_rejects_growth_and_holds_its_level_without():
    """Curvature growing 150x: rejected (p < 0.05) in at least 35 of 40 studies (measured:
    40); the same curvature at every batch size: in at most 5 of 40 (about 2 expected;
    measured: 1)."""
    growing = replicate(range(40))
    assert (growing["curvature_p"] < 0.05).sum() >= 35
    assert growing["reason"].str.contains("the curvature differs across batch sizes").sum() == (
        growing["curvature_p"] < 0.05).sum()
    equal = replicate(range(40), curvature=np.full(len(BATCHES), -0.05))
    assert (equal["curvature_p"] < 0.05).sum() <= 5
    assert equal["exponent"].mean() == pytest.approx(TRUE_K, abs=0.03)


def test_verdict_names_the_rules_the_interval_contains():
    """A flat, noisy study: the interval holds 0, 0.5 and 1 and the words say the study does
    not determine k; a precise one names the square-root rule only."""
    vague = lr_row(default_design(3, curvature=np.full(len(BATCHES), -0.002), noise=0.02))
    assert vague["exponent_lower"] < 0 and vague["exponent_upper"] > 1
    assert verdict(vague).endswith("the study does not determine k")
    sharp = lr_row(default_design(3, noise=0.002))
    assert verdict(sharp) == ("it contains the square-root rule (k = 0.5), not a constant "
                              "(k = 0) or the linear rule (k = 1)")
    low = sharp.copy()
    low[["constant_in_ci", "sqrt_rule_in_ci", "linear_rule_in_ci"]] = [False, False, False]
    assert verdict(low).startswith("it contains none of the rules")


def test_an_unbounded_interval_is_infinite_and_contains_every_rule():
    """Three batch sizes of barely curved trials: the profile never rises far enough within
    k = -3 .. 3, so both ends are unbounded; at two, the best fit itself runs to the edge of
    that range and gives no k, only the unbounded interval."""
    trials = default_design(3, curvature=np.full(len(BATCHES), -0.003), noise=0.02)
    fit = lr_row(trials[trials["batch_size"].isin([16, 32, 64])])
    assert math.isfinite(fit["exponent"])
    assert (fit["exponent_lower"], fit["exponent_upper"]) == (-math.inf, math.inf)
    assert fit["constant_in_ci"] and fit["sqrt_rule_in_ci"] and fit["linear_rule_in_ci"]
    assert verdict(fit).endswith("the study does not determine k")
    trials = default_design(1, curvature=np.full(len(BATCHES), -0.003), noise=0.02)
    edge = lr_row(trials[trials["batch_size"].isin([16, 32])])
    assert math.isnan(edge["exponent"]) and edge["method"] == "free_curvature_profile"
    assert (edge["exponent_lower"], edge["exponent_upper"]) == (-math.inf, math.inf)
    assert "the best fit runs to the edge of the exponents searched (-3 to 3)" in edge["reason"]


def test_warmup_tied_to_the_learning_rate_gets_no_exponent():
    """The same Sobol (base_lr, warmup) points at every batch size: each warmup value goes
    with one base_lr, so no warmup exponent; drawn afresh per batch size, one is fitted."""
    tied = default_design(2, warmup=True)
    fits = lr_scaling(tied, "maximize").fits.set_index("parameter")
    warm = fits.loc["warmup_epochs"]
    assert math.isnan(warm["exponent"])
    assert warm["reason"].startswith("no exponent: the design ties warmup_epochs to base_lr "
                                     "(each of the 5 warmup_epochs values goes with one "
                                     "base_lr, the same pairs at every batch_size)")
    assert math.isfinite(fits.loc["learning_rate", "exponent"])
    rng = np.random.default_rng(0)
    free = tied.assign(warmup_epochs=rng.uniform(0, 1, len(tied)))
    warm = lr_scaling(free, "maximize").fits.set_index("parameter").loc["warmup_epochs"]
    assert math.isfinite(warm["exponent"]) and warm["method"] == "best_trial_power_fit"
