"""The branched protocol's plan (Merrill et al. 2025, "Critical Batch Size Revisited").

A branched study runs two searches, one after the other (``Study.cells``): ``NAME/base``, one
trial at ``base_batch_size`` B0 that saves its model and optimizer state at each fraction of
its budget (``save_states_at``), then ``NAME/branches``, one trial per (fraction, k), all in
one Tune run so they go in parallel: each starts from the state at its fraction with batch
size k x B0, a constant learning rate (the base run's at the checkpoint x rule(k)) and
``branch_examples`` examples. Every branch is an enqueued Optuna point of the categoricals
``branch_of`` (the base trial's id), ``branch_fraction`` and ``branch_k``, which the trials
table keeps as columns. No Ray here: the runner calls ``plan_cell`` between its searches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lbt_study.config import TrainConfig
from lbt_study.errors import UserError
from lbt_study.spec import BUDGET_SETTINGS, Cell, Study
from lbt_study.train.branching import read_state, state_path

STATES_DIR = "branches"
"""The run directory's folder of branch states (f=<fraction>.pt)."""
BASE, BRANCHES = "/base", "/branches"

_BASE_ONLY = frozenset({
    "budget", *BUDGET_SETTINGS, "lr", "base_lr",
    "warmup_epochs", "batch_growth", "swa_start", "save_states_at", "states_dir", "schedule",
    "eval_schedule", "eval_every_examples", "evals_per_doubling", "stop_at_target",
    "batch_size", "init_state", "workload", "target", "divergence_factor",
})
"""Base-run settings a branch sets itself (or that belong to the study, not the trial)."""


def lr_factor(rule: str, k: int) -> float:
    """The learning-rate factor of a branch at k x B0: k (linear), sqrt(k), or 1 (none)."""
    return {"linear": float(k), "sqrt": math.sqrt(k), "none": 1.0}[rule]


class BranchSpace:
    """The branches' space: the enqueued (branch_of, branch_fraction, branch_k) point gives
    the branch's complete trial config (a class: OptunaSearch pickles it)."""

    def __init__(self, base_id: str, fractions: list[float], ks: list[int],
                 values: dict[tuple[float, int], dict[str, Any]]) -> None:
        self.base_id, self.fractions, self.ks, self.values = base_id, fractions, ks, values

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_categorical("branch_of", [self.base_id])
        fraction = trial.suggest_categorical("branch_fraction", self.fractions)
        k = trial.suggest_categorical("branch_k", self.ks)
        return dict(self.values[(fraction, k)])


def plan_cell(study: Study, cell: Cell, run_dir: Path,
              records: list[dict[str, Any]]) -> tuple[Study, Cell] | None:
    """The study and cell the runner runs for ``cell``: unchanged for other protocols; the
    base with its states directory; the branches from the base's record (None, with no
    branch to run, when the base trial did not finish ok)."""
    if study.protocol != "branched":
        return study, cell
    states = str(Path(run_dir) / STATES_DIR)
    if cell.study_name.endswith(BASE):
        return study.model_copy(update={"fixed": {**study.fixed, "states_dir": states}}), cell
    base = _base_record(study, records)
    if base is None or base.get("status") != "ok":
        return None
    return branch_study(study, base, states), Cell(cell.study_name, {}, cell.trials)


def branch_study(study: Study, base: dict[str, Any], states: str) -> Study:
    """The branches' study: every (fraction, k) enqueued, each branch's config computed from
    the base trial's config as run and the learning rate saved at its checkpoint."""
    spec = study.branched
    if spec is None:  # Study's own check refuses this; a copy made without validation may not
        raise UserError("protocol 'branched' needs branched=Branched(...)")
    config = {k: base.get(k) for k in TrainConfig.model_fields}
    shared = {k: v for k, v in config.items() if k not in _BASE_ONLY and v is not None
              and not (isinstance(v, float) and math.isnan(v))}  # NaN: a missing value
    values: dict[tuple[float, int], dict[str, Any]] = {}
    for fraction in spec.fractions:
        path = state_path(states, fraction)
        lr = float(read_state(path)["lr"])
        for k in spec.ks:
            values[(fraction, k)] = {
                **shared, "batch_size": k * spec.base_batch_size,
                "lr": lr * lr_factor(spec.lr_rule, k), "schedule": "constant",
                "budget": "examples", "budget_examples": spec.branch_examples,
                "eval_schedule": "uniform",
                "eval_every_examples": spec.branch_examples // spec.branch_evals,
                "init_state": str(path),
                "divergence_factor": None}  # the first step's loss is no reference here
    points = [{"branch_of": base["trial_id"], "branch_fraction": f, "branch_k": k}
              for f in spec.fractions for k in spec.ks]
    space = BranchSpace(str(base["trial_id"]), list(spec.fractions), list(spec.ks), values)
    return study.model_copy(update={"space": space, "fixed": {}, "initial_points": points,
                                    "trials": len(points)})


def _base_record(study: Study, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The base trial's record among the driver's records, if it has finished."""
    return next((r for r in records if r.get("optuna_study") == study.name + BASE), None)


def branch_columns(config: dict[str, Any]) -> dict[str, Any]:
    """The trials-table branch columns of a Tune config (None/NaN for other trials)."""
    return {"branch_of": config.get("branch_of"),
            "branch_fraction": config.get("branch_fraction", math.nan),
            "branch_k": config.get("branch_k", math.nan)}


def skipped_line(study: Study, records: list[dict[str, Any]]) -> str:
    """Why no branch runs: the base trial's status and error, in one line."""
    base = _base_record(study, records)
    if base is None:
        return f"branched study {study.name!r}: no base trial finished; no branch runs"
    return (f"branched study {study.name!r}: the base trial {base.get('trial_id')} ended "
            f"{base.get('status')} ({base.get('error') or 'no error'}); no branch runs")
