"""Coverage of the planted critical batch size by its 95% interval, on planted studies of the
default design (lbt_study.analysis.planted): 7 batch sizes 16 ... 1024, 5 trials per batch
size at the same scrambled Sobol points at every B, seed noise 0.2 on log steps, B_crit 60;
and of the adaptive design (digits_adaptive.py's rule: 3 trials per B, 7 a round, at most 49).

Each replicate r is drawn from default_rng(r): the counts below are exact for this code. With
n replicates the standard error of a coverage near 0.95 is sqrt(0.95 x 0.05 / n): 0.0097 at
500, so ">= 0.93" fails a 0.90 interval with probability about 0.999."""

from __future__ import annotations

import numpy as np
import pytest

from lbt_study.analysis import critical_batch_size_bootstrap
from lbt_study.analysis.adaptive import interval_state
from lbt_study.analysis.planted import (
    AdaptiveRule,
    Plant,
    adaptive_coverage,
    fixed_coverage,
    interval_of,
    simulate_adaptive,
    state_of,
    trials_table,
)

DEFAULT = Plant()  # shared Sobol points, B_crit 60, seed noise 0.2
INDEPENDENT = Plant(b_crit=200.0, design="independent", curvature=0.2, noise=0.0)


@pytest.mark.parametrize("resample", ["residuals", "trials"])
def test_the_arrays_give_the_interval_the_table_gives(resample):
    # fixed_coverage and the adaptive simulation compute from arrays: the same numbers
    for seed in (0, 1):
        steps = DEFAULT.steps(np.random.default_rng(seed), 5)
        table = trials_table(DEFAULT, steps, dict.fromkeys(DEFAULT.batch_sizes, 5))
        got = critical_batch_size_bootstrap(table, "maximize", n_boot=200, seed=seed,
                                            resample=resample)
        lower, upper = interval_of(DEFAULT, steps, 200, seed, 0.95, resample)
        assert (lower, upper) == pytest.approx((got.b_crit_fit_lower, got.b_crit_fit_upper),
                                               rel=1e-12)
    counts = {16: 3, 32: 4, 64: 3, 128: 5, 256: 3, 512: 6, 1024: 3}  # as an adaptive study
    steps = DEFAULT.steps(np.random.default_rng(1), 6)
    table = trials_table(DEFAULT, steps, counts)
    state = interval_state(table, "maximize", n_boot=200, seed=1, ci=0.99, resample=resample)
    mine = state_of(DEFAULT, steps, counts, 200, 1, 0.99, resample)
    for key in ("b_crit", "lower", "upper", "rel_width", "level"):
        assert mine[key] == pytest.approx(state[key], rel=1e-9)


@pytest.mark.parametrize("plant", [DEFAULT, INDEPENDENT], ids=["shared", "independent"])
def test_the_default_interval_covers_the_planted_b_crit_at_its_level(plant):
    """500 planted sweeps, 400 resamples each (about 4 s). Measured: shared 0.952,
    independent 0.938. The trial bootstrap of before (too slow to run here: about 1 s a sweep)
    measured 0.967 (150 sweeps) and 0.925 (400 sweeps): the latter fails this test."""
    got = fixed_coverage(plant, 500, n_boot=400)
    print(got)
    assert 0.93 <= got["coverage"] <= 0.975  # calibrated: neither too narrow nor too wide
    assert got["miss_low"] <= 0.045 and got["miss_high"] <= 0.045  # and on both sides


def test_a_tuning_penalty_that_grows_with_b_is_a_bias_no_interval_covers():
    # curvature 30x larger at 1024 than at 16: the best of 5 points sits further above S(B)
    # the larger B, the frontier bends and the fit puts B_crit high; the interval misses
    # on one side far more often than 2.5% (stated in BENCHMARKS, not fixed by resampling)
    got = fixed_coverage(Plant(growth=30.0, curvature=0.3), 200, n_boot=400)
    assert got["coverage"] < 0.9 and got["miss_low"] > 0.1 and got["miss_high"] < 0.02


def test_the_adaptive_study_stops_with_an_interval_that_covers():
    """The default rule (Bonferroni over 5 looks: 99% intervals; balanced allocation) on
    150 planted adaptive studies, 400 resamples a look (about 6 s). Measured: 1.0, 23% of
    them stopped by the width rule, 45 trials on average."""
    got = adaptive_coverage(DEFAULT, AdaptiveRule(), 150, n_boot=400)
    print(got)
    assert got["coverage"] >= 0.93
    assert 20 < got["mean_trials"] <= 49


def test_a_simulated_adaptive_study_follows_the_rule():
    run = simulate_adaptive(DEFAULT, AdaptiveRule(), 3, n_boot=200)
    counts = run["counts"]
    assert sum(counts.values()) == run["trials"] == 21 + 7 * run["rounds"]
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced
    # without a round: the width rule at level 0.99 held at round 0, or the budget is spent
    assert run["by_width"] or run["trials"] == 49


@pytest.mark.slow
def test_the_adaptive_coverage_over_400_studies():
    """400 planted adaptive studies at the report's 1,000 resamples (about 40 s). Measured:
    0.99 (0.96 among the 18% the width rule stopped), 46 trials on average."""
    got = adaptive_coverage(DEFAULT, AdaptiveRule(), 400)
    print(got)
    assert got["coverage"] >= 0.93


@pytest.mark.slow
def test_the_default_interval_over_2000_sweeps():
    """2,000 planted sweeps of the default design at 1,000 resamples (about 30 s).
    Measured: 0.9435 (misses 0.026 below, 0.031 above)."""
    got = fixed_coverage(DEFAULT, 2000)
    print(got)
    assert 0.935 <= got["coverage"] <= 0.965
