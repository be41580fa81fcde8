"""The adaptive protocol's runner (``lbt_study.study.protocols.adaptive``): rounds of the
per-batch-size protocol until the critical batch size is known well enough.

Round 0 is the per-batch-size protocol with ``Study.trials`` trials at every batch size. After
each round the driver reads the trials table, computes B_crit's trial-bootstrap interval (and
the LR exponent's, if the rule asks), applies the stop rule and, to go on, hands the next
round's ``round_trials`` trials to the batch sizes whose frontier points hold the interval
open (``lbt_study.analysis.adaptive``; the rules are documented there). Each round is a
``driver.run_study`` with ``remaining={cell: trials to add}``: the cells' Optuna studies
continue (the same QMC sequence) and the tables in the run directory grow. ASHA, when the
study has it, applies within every round's Tune run of a batch size.

Every round is recorded in study.json (``adaptive_rounds``: the source of truth, rewritten
atomically: the trials added per batch size, and after the round ran its B_crit, interval,
relative width, LR exponent width, decision and reason), also written as the table
``adaptive_rounds`` (.parquet, .csv), and printed as one line. A round's trials are recorded
before it runs, so ``lbt-study resume`` continues an adaptive study: the round the dead
driver left is completed (``resume.reconcile`` settles its Optuna trials), then the rounds go
on. All rounds run in one Ray session (``cluster.ray_session``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pandas as pd

from lbt_study.analysis.adaptive import (
    added_text,
    allocate,
    interval_influence,
    interval_state,
    look_level,
    looks_of,
    rounds_table,
    stop_decision,
    trial_counts,
)
from lbt_study.analysis.summary import AnalysisSettings
from lbt_study.errors import UserError
from lbt_study.records.record import StudyRecord
from lbt_study.records.results import write_table
from lbt_study.records.rundir import TRIALS, has_table, read_table
from lbt_study.study.cluster import ray_session
from lbt_study.study.driver import Progress, run_study
from lbt_study.study.protocols import Cell, StopWhen
from lbt_study.study.protocols.adaptive import Adaptive
from lbt_study.study.resume import reconcile
from lbt_study.study.spec import Study
from lbt_study.study.storage import connect, handle_of

ROUNDS = "adaptive_rounds"
"""study.json key and table name of the rounds."""
INFLUENCE_BOOT = 500  # bootstrap resamples of the allocation's influence
ADAPTIVE = Adaptive()


@dataclass(frozen=True)
class _Run:
    """What every round needs: the study, where it runs, and run_study's settings."""

    study: Study
    rule: StopWhen
    run_dir: Path
    direction: str
    options: dict[str, Any]
    progress: Progress

    def cell(self, batch_size: int) -> Cell:
        return ADAPTIVE.cell(self.study, batch_size)

    @property
    def round_size(self) -> int:
        return self.rule.round_trials or len(self.study.batch_sizes)

    def level(self, ci: float) -> float:
        """The interval's level at every look (``StopWhen.adjust``)."""
        looks = looks_of(self.study.trials * len(self.study.batch_sizes), self.round_size,
                         self.rule.max_trials)
        return look_level(ci, looks, self.rule.adjust)


def run_adaptive(study: Study, run_dir: Path, direction: str, *, address: str | None = None,
                 num_cpus: int | None = None, spec_module: ModuleType | None = None,
                 max_trial_cpus: int = 1, target: float | None = None,
                 progress: Progress = print, announce: Progress | None = None,
                 fresh: bool = True, storage: str | None = None) -> pd.DataFrame:
    """Run (``fresh``) or continue (resume) the adaptive study in ``run_dir``; return the
    rounds table. The keywords are ``run_study``'s (``storage``: the Optuna storage URL,
    password included; None: the run directory's SQLite)."""
    ADAPTIVE.preflight(study, target)  # a UserError without stop_when or a target
    rule = cast(StopWhen, study.stop_when)
    run = _Run(study, rule, Path(run_dir).resolve(), direction,
               {"address": address, "num_cpus": num_cpus, "spec_module": spec_module,
                "max_trial_cpus": max_trial_cpus, "target": target, "progress": progress,
                "announce": announce, "storage": storage}, progress)
    rounds = _load_rounds(run, fresh)
    progress(_plan_line(run, rounds))
    with ray_session(address, num_cpus):
        while True:
            if "decision" not in rounds[-1]:
                _run_round(run, rounds, fresh and len(rounds) == 1)
                _decide(run, rounds)
            if rounds[-1]["decision"] == "stop":
                return rounds_table(rounds)
            rounds.append(_next_round(run, rounds))
            _save(run, rounds)


def _load_rounds(run: _Run, fresh: bool) -> list[dict[str, Any]]:
    """The recorded rounds; a fresh study records round 0 (``trials`` at every B) first."""
    meta = StudyRecord.read(run.run_dir)
    rounds = [] if fresh or meta is None else list(meta.adaptive_rounds)
    if not rounds:
        rounds = [{"round": 0, "added": {str(b): run.study.trials
                                         for b in run.study.batch_sizes}}]
        _save(run, rounds)
    return rounds


def _plan_line(run: _Run, rounds: list[dict[str, Any]]) -> str:
    rule, n = run.rule, len(run.study.batch_sizes)
    lr = "" if rule.lr_exponent_width is None else \
        f" and the LR exponent's interval <= {rule.lr_exponent_width:g} wide"
    where = "starting" if len(rounds) == 1 and "decision" not in rounds[0] else \
        f"continuing after {len(rounds)} recorded rounds"
    level = run.level(AnalysisSettings().ci)
    return (f"adaptive study, {where}: round 0 = {run.study.trials} trials x {n} batch sizes, "
            f"then {run.round_size} trials a round ({rule.allocation}), until (hi - lo) / "
            f"B_crit <= {rule.b_crit_rel_width:g} at level {level:.4g} ({rule.adjust}){lr} "
            f"with >= {rule.min_trials} trials at every batch size, or {rule.max_trials} "
            "trials")


def _planned(rounds: list[dict[str, Any]]) -> dict[int, int]:
    """Trials asked for at each batch size over every recorded round."""
    total: dict[int, int] = {}
    for rec in rounds:
        for b, n in rec["added"].items():
            total[int(b)] = total.get(int(b), 0) + int(n)
    return total


def _run_round(run: _Run, rounds: list[dict[str, Any]], first: bool) -> None:
    """Run the trials still missing from the plan: round 0 of a fresh study as run_study
    does; otherwise what ``reconcile`` counts (which also settles a dead driver's trials)."""
    remaining = None
    if not first:
        cells = [replace(run.cell(b), trials=n) for b, n in _planned(rounds).items()]
        store = connect(run.options["storage"])
        remaining = reconcile(run.run_dir, cells, handle_of(store)).remaining
        if not sum(remaining.values()):
            return
    run_study(run.study, run.run_dir, run.direction, remaining=remaining, **run.options)


def _trials(run: _Run) -> pd.DataFrame:
    if not has_table(run.run_dir, TRIALS):
        return pd.DataFrame(columns=["trial_id", "status", "batch_size"])
    return read_table(run.run_dir, TRIALS)


def _decide(run: _Run, rounds: list[dict[str, Any]]) -> None:
    """Analyse the tables after the last round, apply the stop rule, record and say it."""
    trials, s = _trials(run), AnalysisSettings()
    counts = trial_counts(trials, run.study.batch_sizes)
    state = interval_state(trials, run.direction, lr=run.rule.lr_exponent_width is not None,
                           n_boot=s.n_boot, seed=s.seed, ci=run.level(s.ci),
                           statuses=s.frontier_statuses, lr_statuses=s.statuses)
    decision, reason = stop_decision(state, counts, b_crit_rel_width=run.rule.b_crit_rel_width,
                                     max_trials=run.rule.max_trials,
                                     min_trials=run.rule.min_trials,
                                     lr_exponent_width=run.rule.lr_exponent_width)
    current = rounds[-1]
    current.update({k: state[k] for k in ("b_crit", "lower", "upper", "level", "rel_width",
                                          "lr_exponent", "lr_width")})
    current.update(trials_total=sum(counts.values()), decision=decision, reason=reason)
    _save(run, rounds)
    run.progress(_round_line(current))


def _next_round(run: _Run, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The next round's trials per batch size (``allocate``), within the budget."""
    trials, s = _trials(run), AnalysisSettings()
    counts = trial_counts(trials, run.study.batch_sizes)
    size = min(run.round_size, run.rule.max_trials - sum(counts.values()))
    influence: dict[int, float] = {}
    if run.rule.allocation == "influence":
        try:
            frame = interval_influence(trials, run.direction, n_boot=INFLUENCE_BOOT,
                                       seed=s.seed, ci=s.ci, statuses=s.frontier_statuses)
            influence = dict(zip(frame["batch_size"], frame["influence"], strict=True))
        except (ValueError, KeyError):
            pass  # no trial to judge by: balance and closeness to B_crit decide
    added = allocate(counts, influence, size, min_trials=run.rule.min_trials,
                     max_ratio=run.rule.max_trials_ratio, b_crit=rounds[-1]["b_crit"],
                     rule=run.rule.allocation)
    return {"round": rounds[-1]["round"] + 1, "added": {str(b): n for b, n in added.items()},
            "influence": {str(b): round(float(v), 4) for b, v in influence.items()}}


def _round_line(rec: dict[str, Any]) -> str:
    added = {int(b): int(n) for b, n in rec["added"].items()}
    lr = "" if math.isnan(rec["lr_width"]) else f"; LR exponent width {rec['lr_width']:.3g}"
    return (f"adaptive round {rec['round']}: {rec['trials_total']} trials "
            f"(+{sum(added.values())}: {added_text(added)}); B_crit {rec['b_crit']:.4g} "
            f"[{rec['lower']:.4g}, {rec['upper']:.4g}] ({rec.get('level', math.nan):.4g}), "
            "relative width "
            f"{rec['rel_width']:.3g}{lr} -> {rec['decision']}: {rec['reason']}")


def _save(run: _Run, rounds: list[dict[str, Any]]) -> None:
    """The rounds into study.json and the adaptive_rounds table."""
    meta = StudyRecord.read(run.run_dir)
    if meta is None:
        raise UserError(f"{run.run_dir} has no study.json to record the rounds in")
    meta.updated(stop_when=run.rule.model_dump(), adaptive_rounds=rounds,
                 trials=sum(_planned(rounds).values())).write(run.run_dir)
    write_table(rounds_table(rounds), run.run_dir, ROUNDS)
