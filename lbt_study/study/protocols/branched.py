"""The branched protocol (Merrill et al. 2025, "Critical Batch Size Revisited").

A branched study runs two searches, one after the other: ``NAME/base``, one trial at
``base_batch_size`` B0 that saves its model and optimizer state at each fraction of its
budget (``save_states_at``), then ``NAME/branches``, one trial per (fraction, k), all in one
Tune run so they go in parallel: each starts from the state at its fraction with batch size
k x B0, a constant learning rate (the base run's at the checkpoint x rule(k)) and
``branch_examples`` examples. Every branch is an enqueued Optuna point of the categoricals
``branch_of`` (the base trial's id), ``branch_fraction`` and ``branch_k``, which the trials
table keeps as columns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lbt_study.errors import UserError
from lbt_study.study.protocols.base import Cell, Protocol
from lbt_study.train.branching import read_state, state_path
from lbt_study.train.config import BUDGET_SETTINGS, TrainSettings, increasing_fractions

if TYPE_CHECKING:
    from lbt_study.study.spec import Study

STATES_DIR = "branches"
"""The run directory's folder of branch states (f=<fraction>.pt)."""
BASE, BRANCHES = "/base", "/branches"
BRANCH_SETS = ("batch_size", "save_states_at", "states_dir", "init_state")
"""Trial settings the protocol sets itself."""
BRANCH_COLUMNS = ("branch_of", "branch_fraction", "branch_k")
"""The Optuna parameters of a branch, kept as trials-table columns."""

_BASE_ONLY = frozenset({
    "budget", *BUDGET_SETTINGS, "lr", "base_lr",
    "warmup_epochs", "batch_growth", "swa_start", "save_states_at", "states_dir", "schedule",
    "eval_schedule", "eval_every_examples", "evals_per_doubling", "stop_at_target",
    "batch_size", "init_state", "workload", "target", "divergence_factor",
})
"""Base-run settings a branch sets itself (or that belong to the study, not the trial)."""


class Branched(BaseModel):
    """The branched critical batch size (``protocol="branched"``): one base run at
    ``base_batch_size`` B0 saves its state at ``fractions`` of its budget; from each, a
    branch per k in ``ks`` trains ``branch_examples`` examples at k x B0 with a constant
    learning rate (the base's at the checkpoint x k "linear", x sqrt(k) "sqrt", or x 1
    "none"); the CBS at a checkpoint is the largest k x B0 whose smoothed training loss ends
    within ``epsilon`` of the k = 1 branch's (relative). ``ema``: the smoothing factor over a
    branch's evaluations, which come every branch_examples / ``branch_evals`` examples (the
    same examples apart at every k), of each interval's mean minibatch loss."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    base_batch_size: int = Field(gt=0)
    fractions: list[float] = Field(min_length=1)
    ks: list[int] = Field(min_length=2)
    lr_rule: Literal["linear", "sqrt", "none"]
    branch_examples: int = Field(gt=0)
    epsilon: float = Field(default=0.05, gt=0)
    ema: float = Field(default=0.5, ge=0, lt=1)
    branch_evals: int = Field(default=10, ge=2)

    @model_validator(mode="after")
    def _check(self) -> Branched:
        if not increasing_fractions(self.fractions):
            raise ValueError(f"fractions must increase within (0, 1), got {self.fractions}")
        if self.ks[0] != 1 or self.ks != sorted(set(self.ks)):
            raise ValueError(f"ks must increase from 1, got {self.ks}")
        largest, every = self.ks[-1] * self.base_batch_size, \
            self.branch_examples // self.branch_evals
        if largest > every:
            raise ValueError(
                f"branch_examples {self.branch_examples} / branch_evals {self.branch_evals} = "
                f"{every} examples between evaluations is less than one step of the largest "
                f"branch ({self.ks[-1]} x {self.base_batch_size} = {largest}): raise "
                "branch_examples or lower ks or branch_evals")
        return self


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


class BranchedProtocol(Protocol):
    name = "branched"
    uses = frozenset({"branched"})
    independent_cells = False  # the branches start from the base trial's states

    def check(self, study: Study) -> None:
        """One base run; the base batch size and the branch states are the protocol's."""
        if study.branched is None:
            raise ValueError("protocol='branched' and branched=Branched(...) go together")
        if "trials" in study.model_fields_set and study.trials != 1:
            raise ValueError(f"a branched study runs one base trial (trials=1), got trials="
                             f"{study.trials}; the branches are fractions x ks")
        taken = sorted(set(BRANCH_SETS) & set(study.fixed))
        if taken:
            raise ValueError(f"protocol 'branched' sets {taken} itself; remove them from fixed")
        if study.asha is not None or study.multi_objective:
            raise ValueError("protocol 'branched' takes no asha or multi_objective")

    def cells(self, study: Study) -> list[Cell]:
        """NAME/base (one trial at B0, saving states) and NAME/branches (fractions x ks; the
        branch configs come from ``plan``; preflight checks the largest batch)."""
        b = study.branched
        if b is None:
            raise UserError("protocol 'branched' needs branched=Branched(...)")
        fractions = ",".join(f"{f:g}" for f in b.fractions)
        return [Cell(f"{study.name}/base",
                     {"batch_size": b.base_batch_size, "save_states_at": fractions}, 1),
                Cell(f"{study.name}/branches", {"batch_size": b.ks[-1] * b.base_batch_size},
                     len(b.fractions) * len(b.ks))]

    def plan(self, study: Study, cell: Cell, run_dir: Path,
             records: list[dict[str, Any]]) -> tuple[Study, Cell] | None:
        """The base with its states directory; the branches from the base's record (None,
        with no branch to run, when the base trial did not finish ok)."""
        states = str(Path(run_dir) / STATES_DIR)
        if cell.study_name.endswith(BASE):
            return study.model_copy(update={"fixed": {**study.fixed, "states_dir": states}}), \
                cell
        base = _base_record(study, records)
        if base is None or base.get("status") != "ok":
            return None
        return branch_study(study, base, states), Cell(cell.study_name, {}, cell.trials)

    def skipped(self, study: Study, records: list[dict[str, Any]]) -> str:
        """Why no branch runs: the base trial's status and error, in one line."""
        base = _base_record(study, records)
        if base is None:
            return f"branched study {study.name!r}: no base trial finished; no branch runs"
        return (f"branched study {study.name!r}: the base trial {base.get('trial_id')} ended "
                f"{base.get('status')} ({base.get('error') or 'no error'}); no branch runs")

    def columns(self, config: dict[str, Any]) -> dict[str, Any]:
        return branch_columns(config)

    def shape(self, study: Study) -> str:
        return f"1 base trial, then {self.cells(study)[-1].trials} branches (fractions x ks)"

    def resume_refusal(self, study: Study) -> str | None:
        return ("resume does not continue a branched study (protocol='branched'); its "
                "tables and branch states stay: start a new run")


def branch_study(study: Study, base: dict[str, Any], states: str) -> Study:
    """The branches' study: every (fraction, k) enqueued, each branch's config computed from
    the base trial's config as run and the learning rate saved at its checkpoint."""
    spec = study.branched
    if spec is None:  # Study's own check refuses this; a copy made without validation may not
        raise UserError("protocol 'branched' needs branched=Branched(...)")
    config = {k: base.get(k) for k in TrainSettings.model_fields}
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
