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

``fixed_coverage`` runs ``critical_batch_size_bootstrap`` on ``reps`` planted sweeps of
``per_batch`` trials at every batch size; ``adaptive_coverage`` runs the adaptive study's
rounds (``interval_state``, ``stop_decision``, ``allocate``, as ``lbt_study.study.rounds``
does, without Ray) on planted studies. Each replicate is seeded by its index, so a table is
reproducible. Only numpy, scipy and pandas: no training.
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
    interval_state,
    looks_of,
    stop_decision,
)
from lbt_study.analysis.scaling import critical_batch_size_bootstrap

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Plant:
    """A planted McCandlish curve and the trials' scatter about it (module docstring)."""

    b_crit: float = 200.0
    s_min: float = 1000.0
    design: str = "shared"
    curvature: float = 4.0
    growth: float = 1.0
    noise: float = 0.1
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


def fixed_coverage(plant: Plant, reps: int, *, per_batch: int = 5, n_boot: int = 1000,
                   ci: float = 0.95, resample: str = "residuals") -> dict[str, float]:
    """Coverage of ``plant.b_crit`` by the ``ci`` interval over ``reps`` planted sweeps of
    ``per_batch`` trials at every batch size; also the median relative width."""
    hits, widths = [], []
    for rep in range(reps):
        steps = plant.steps(np.random.default_rng(rep), per_batch)
        table = trials_table(plant, steps, dict.fromkeys(plant.batch_sizes, per_batch))
        got = critical_batch_size_bootstrap(table, "maximize", n_boot=n_boot, seed=rep,
                                            ci=ci, resample=resample)
        hits.append(got.b_crit_fit_lower <= plant.b_crit <= got.b_crit_fit_upper)
        widths.append((got.b_crit_fit_upper - got.b_crit_fit_lower) / got.b_crit_fit)
    return {"reps": reps, "coverage": float(np.mean(hits)),
            "median_rel_width": float(np.median(widths))}


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
    level = 1 - (1 - ci) / looks if rule.adjust == "bonferroni" else ci
    rounds = 0
    while True:
        table = trials_table(plant, steps, counts)
        state = interval_state(table, "maximize", n_boot=n_boot, seed=seed, ci=level,
                               resample=rule.resample)
        decision, _ = stop_decision(state, counts, b_crit_rel_width=rule.b_crit_rel_width,
                                    max_trials=rule.max_trials, min_trials=rule.min_trials)
        if decision == "stop":
            break
        counts = _next_counts(table, counts, state, rule, seed)
        rounds += 1
    return {"covered": bool(state["lower"] <= plant.b_crit <= state["upper"]),
            "trials": sum(counts.values()), "rounds": rounds, "b_crit": state["b_crit"],
            "rel_width": state["rel_width"],
            "by_width": bool(state["rel_width"] <= rule.b_crit_rel_width),
            "counts": dict(counts)}


def _next_counts(table: pd.DataFrame, counts: Mapping[int, int], state: Mapping[str, Any],
                 rule: AdaptiveRule, seed: int) -> dict[int, int]:
    size = min(rule.round_trials, rule.max_trials - sum(counts.values()))
    influence: dict[int, float] = {}
    if rule.allocation == "influence":
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
