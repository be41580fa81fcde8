"""Planted studies with a known critical batch size, to measure how often an interval covers it.

``Plant`` is a McCandlish curve S(B) = S_min (1 + B_crit / B) and a way trials scatter above
it. Trial k at batch size B needs S(B) exp(penalty_k(B) + e_kB) steps:

- ``design="shared"`` (the per-batch-size protocol: every batch size's Optuna study draws the
  same scrambled Sobol points): point k sits at u_k in [0, 1] (the searched log learning-rate
  range), the best-tuned value at x* ~ U(0.25, 0.75), penalty_k(B) = curvature(B) (u_k - x*)^2
  with the curvature ``curvature`` at the smallest batch size growing geometrically to
  ``growth`` times that at the largest (``growth`` = 1: alike everywhere); e_kB ~ N(0,
  ``noise``) the seed noise of one run, independent per trial.
- ``design="independent"``: penalty_kB = |N(0, ``curvature``)|, independent per trial (the
  plant of tests/test_analysis_bootstrap.py with ``curvature`` 0.2, ``noise`` 0).

``fixed_coverage`` computes the interval ``critical_batch_size_bootstrap`` would give
(``interval_of``, from the arrays, without building a table) on ``reps`` planted sweeps of
``per_batch`` trials at every batch size; ``adaptive_coverage`` runs the adaptive study's
rounds on planted studies as ``lbt_study.study.rounds`` does, without Ray: at every look the
interval ``interval_state`` would give (``state_of``, from the arrays), at the level
``look_level`` sets, then ``stop_decision`` and ``allocate``. Each replicate is seeded by
its index, so a table is reproducible. Only numpy, scipy and pandas: no training.

The defaults (B_crit 60, seed noise 0.2, curvature 4, alike at every B) are set to look like
the default digits study: its 95% interval at 5 trials per batch size was 59 [40.7, 100.8],
relative width 1.02, and the plant's median relative width there is 1.1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import qmc

from lbt_study.analysis.adaptive import (
    allocate,
    interval_influence,
    look_level,
    looks_of,
    rel_width,
    stop_decision,
)
from lbt_study.analysis.scaling import _mccandlish_fit, refit_bootstrap, residual_refits

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Plant:
    """A planted McCandlish curve and the trials' scatter about it (module docstring)."""

    b_crit: float = 60.0
    s_min: float = 1000.0
    design: str = "shared"
    curvature: float = 4.0
    growth: float = 1.0
    noise: float = 0.2
    batch_sizes: tuple[int, ...] = BATCH_SIZES

    def steps(self, rng: np.random.Generator, n_max: int) -> np.ndarray:
        """(batch sizes, n_max) steps to target of trials 0 .. n_max - 1 at every B."""
        batch = np.asarray(self.batch_sizes, dtype=float)
        shape = (len(batch), n_max)
        if self.design == "independent":
            penalty = np.abs(rng.normal(0, self.curvature, shape))
        elif self.design == "shared":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Sobol balance warning for n not 2^m
                u = qmc.Sobol(1, scramble=True, seed=rng).random(n_max)[:, 0]
            best = rng.uniform(0.25, 0.75)
            curv = self.curvature * np.geomspace(1, self.growth, len(batch))
            penalty = curv[:, None] * (u[None, :] - best) ** 2
        else:
            raise ValueError(f"Plant: design must be 'shared' or 'independent', got "
                             f"{self.design!r}")
        noise = rng.normal(0, self.noise, shape) if self.noise > 0 else 0.0
        curve = self.s_min * (1 + self.b_crit / batch)
        return curve[:, None] * np.exp(penalty + noise)


def trials_table(plant: Plant, steps: np.ndarray, counts: Mapping[int, int]) -> pd.DataFrame:
    """The trials table of the first ``counts[B]`` trials of ``steps`` at each B."""
    frames = []
    for j, b in enumerate(plant.batch_sizes):
        n = int(counts[b])
        frames.append(pd.DataFrame({
            "trial_id": [f"B{b}_{k}" for k in range(n)], "optuna_trial_number": range(n),
            "status": "ok", "batch_size": b, "final_objective": 0.96, "reached_target": True,
            "steps_to_target": steps[j, :n], "examples_seen": steps[j, :n] * b,
            "train_seconds": steps[j, :n] * 0.01}))
    return pd.concat(frames, ignore_index=True)


def interval_of(plant: Plant, steps: np.ndarray, n_boot: int, seed: int, ci: float,
                resample: str, counts: Sequence[int] | None = None) -> tuple[float, float]:
    """The ``ci`` interval of B_crit that ``critical_batch_size_bootstrap`` gives the trials
    ``steps`` (every trial reached the target; the first ``counts[j]`` trials at batch size
    j, all of them by default), computed from the arrays: the frontier is each batch size's
    fastest trial; "residuals" refits it (``residual_refits``), "trials" resamples each
    batch size's trials (``refit_bootstrap``)."""
    batch = np.asarray(plant.batch_sizes, dtype=float)
    groups = [np.sort(row[:n]) for row, n in zip(steps, counts or [steps.shape[1]] * len(batch),
                                                 strict=True)]
    if resample == "trials":
        boot = refit_bootstrap(batch, groups, n_boot, seed, ci)
    else:
        boot = residual_refits(batch, np.array([g[0] for g in groups]), n_boot, seed, ci)
    return boot.lower, boot.upper


def state_of(plant: Plant, steps: np.ndarray, counts: Mapping[int, int], n_boot: int,
             seed: int, ci: float, resample: str) -> dict[str, float]:
    """What ``interval_state`` returns for the planted trials (B_crit, its ``ci`` interval,
    relative width, level), from the arrays."""
    n = [int(counts[b]) for b in plant.batch_sizes]
    minima = np.array([row[:k].min() for row, k in zip(steps, n, strict=True)])
    fit = _mccandlish_fit(np.asarray(plant.batch_sizes, dtype=float), minima, None)
    lower, upper = interval_of(plant, steps, n_boot, seed, ci, resample, n)
    return {"b_crit": fit["b_crit"], "lower": lower, "upper": upper, "level": ci,
            "rel_width": rel_width(fit["b_crit"], lower, upper)}


def fixed_coverage(plant: Plant, reps: int, *, per_batch: int = 5, n_boot: int = 1000,
                   ci: float = 0.95, resample: str = "residuals") -> dict[str, float]:
    """Coverage of ``plant.b_crit`` by the ``ci`` interval (``interval_of``) over ``reps``
    planted sweeps of ``per_batch`` trials at every batch size (replicate r drawn from
    ``default_rng(r)``, its bootstrap seeded r); also the shares of misses below and above
    and the median relative width (hi - lo) / B_crit."""
    lows, highs = np.empty(reps), np.empty(reps)
    for rep in range(reps):
        steps = plant.steps(np.random.default_rng(rep), per_batch)
        lows[rep], highs[rep] = interval_of(plant, steps, n_boot, rep, ci, resample)
    return {"reps": reps, "coverage": float(np.mean((lows <= plant.b_crit)
                                                    & (plant.b_crit <= highs))),
            "miss_low": float(np.mean(highs < plant.b_crit)),
            "miss_high": float(np.mean(lows > plant.b_crit)),
            "median_rel_width": float(np.median((highs - lows) / plant.b_crit))}


@dataclass(frozen=True)
class AdaptiveRule:
    """The adaptive study's settings the simulation needs (``StopWhen`` and ``Study``)."""

    first: int = 3
    round_trials: int = 7
    max_trials: int = 49
    b_crit_rel_width: float = 1.0
    min_trials: int = 3
    max_trials_ratio: float = 2.0
    adjust: str = "bonferroni"
    allocation: str = "balanced"
    resample: str = "residuals"


def simulate_adaptive(plant: Plant, rule: AdaptiveRule, seed: int, *, n_boot: int = 1000,
                      ci: float = 0.95) -> dict[str, Any]:
    """One planted adaptive study: its rounds until the rule stops it; the last interval,
    whether it covers ``plant.b_crit``, the trials spent and the rounds run."""
    steps = plant.steps(np.random.default_rng(seed), rule.max_trials)
    counts = dict.fromkeys(plant.batch_sizes, rule.first)
    looks = looks_of(rule.first * len(counts), rule.round_trials, rule.max_trials)
    level = look_level(ci, looks, rule.adjust)
    rounds = 0
    while True:
        state = state_of(plant, steps, counts, n_boot, seed, level, rule.resample)
        decision, _ = stop_decision(state, counts, b_crit_rel_width=rule.b_crit_rel_width,
                                    max_trials=rule.max_trials, min_trials=rule.min_trials)
        if decision == "stop":
            break
        counts = _next_counts(plant, steps, counts, state, rule, seed)
        rounds += 1
    return {"covered": bool(state["lower"] <= plant.b_crit <= state["upper"]),
            "trials": sum(counts.values()), "rounds": rounds, "b_crit": state["b_crit"],
            "rel_width": state["rel_width"],
            "by_width": bool(state["rel_width"] <= rule.b_crit_rel_width),
            "counts": dict(counts)}


def _next_counts(plant: Plant, steps: np.ndarray, counts: Mapping[int, int],
                 state: Mapping[str, Any], rule: AdaptiveRule, seed: int) -> dict[int, int]:
    """The counts after the next round, allocated as ``lbt_study.study.rounds`` does."""
    size = min(rule.round_trials, rule.max_trials - sum(counts.values()))
    influence: dict[int, float] = {}
    if rule.allocation == "influence":
        table = trials_table(plant, steps, counts)
        frame = interval_influence(table, "maximize", n_boot=500, seed=seed)
        influence = dict(zip(frame["batch_size"], frame["influence"], strict=True))
    added = allocate(counts, influence, size, min_trials=rule.min_trials,
                     max_ratio=rule.max_trials_ratio, b_crit=state["b_crit"],
                     rule=rule.allocation)
    return {b: counts[b] + added[b] for b in counts}


def adaptive_coverage(plant: Plant, rule: AdaptiveRule, reps: int, *, n_boot: int = 1000,
                      ci: float = 0.95) -> dict[str, float]:
    """Over ``reps`` planted adaptive studies: coverage of ``plant.b_crit`` by the interval
    the study stopped with, also among those that stopped on the width rule, the share that
    did, and the mean trials spent."""
    runs = [simulate_adaptive(plant, rule, rep, n_boot=n_boot, ci=ci) for rep in range(reps)]
    by_width = [r for r in runs if r["by_width"]]
    return {"reps": reps, "coverage": float(np.mean([r["covered"] for r in runs])),
            "stopped_by_width": len(by_width) / reps,
            "coverage_when_by_width": (float(np.mean([r["covered"] for r in by_width]))
                                       if by_width else math.nan),
            "mean_trials": float(np.mean([r["trials"] for r in runs]))}


def share_per_batch(runs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Mean trials per batch size over simulated runs (where the allocation sent them)."""
    frame = pd.DataFrame([r["counts"] for r in runs])
    return {int(b): float(v) for b, v in frame.mean().items()}
