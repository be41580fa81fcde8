"""The study spec: a Python file that defines ``study = Study(...)``.

A spec file is Python and is executed when loaded: run only specs you trust.

    from lbt_study import Study

    def space(trial):                      # define-by-run, over an optuna.Trial
        return {"batch_size": trial.suggest_categorical("batch_size", [32, 128, 512]),
                "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True)}

    study = Study(name="demo", workload="digits", space=space, trials=20,
                  fixed={"epochs": 5, "norm": "batch"})

``space(trial)`` returns the trial-config values (its Optuna parameters may be named freely,
e.g. ``log_lr``), or None to use the suggested parameters as they are; ``fixed`` holds the
settings shared by every trial. Both are ``TrainConfig`` fields
and may not overlap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lbt_study.config import TrainConfig, did_you_mean, increasing_fractions, validation_line
from lbt_study.errors import UserError
from lbt_study.storage import parse_storage

SpaceFn = Callable[[Any], dict[str, Any] | None]


class Asha(BaseModel):
    """ASHA early stopping with rungs counted in examples seen (fair across batch sizes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    grace_examples: int = Field(gt=0)
    max_examples: int = Field(gt=0)
    reduction_factor: float = Field(default=3.0, gt=1)

    @model_validator(mode="after")
    def _check(self) -> Asha:
        if self.grace_examples > self.max_examples:
            raise ValueError(
                f"grace_examples {self.grace_examples} exceeds max_examples {self.max_examples}"
            )
        return self


class StopWhen(BaseModel):
    """An adaptive per-batch-size study (``Study(stop_when=...)``, lbt_study.adaptive): after
    round 0 (``Study.trials`` trials at every batch size) it adds ``round_trials`` trials per
    round, where they narrow B_crit's interval most (lbt_study.analysis.adaptive), until the
    interval's (hi - lo) / estimate <= ``b_crit_rel_width`` (and the LR exponent's interval
    width <= ``lr_exponent_width``, if given) with every batch size at ``min_trials`` or more,
    or ``max_trials`` trials are spent. No batch size gets more than ``max_trials_ratio``
    times the trials of the least-tried one (a minimum over more trials is lower: uneven
    counts bias B_crit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    b_crit_rel_width: float = Field(gt=0)
    max_trials: int = Field(gt=0)
    lr_exponent_width: float | None = Field(default=None, gt=0)
    round_trials: int | None = Field(default=None, gt=0)
    """Trials added per round (default: one per batch size)."""
    min_trials: int = Field(default=3, ge=2)
    max_trials_ratio: float = Field(default=2.0, ge=1.0)


class Branched(BaseModel):
    """The branched critical batch size (Merrill et al. 2025, ``protocol="branched"``): one
    base run at ``base_batch_size`` B0 saves its state at ``fractions`` of its budget; from
    each, a branch per k in ``ks`` trains ``branch_examples`` examples at k x B0 with a
    constant learning rate (the base's at the checkpoint x k "linear", x sqrt(k) "sqrt", or
    x 1 "none"); the CBS at a checkpoint is the largest k x B0 whose smoothed training loss
    ends within ``epsilon`` of the k = 1 branch's (relative). ``ema``: the smoothing factor
    over a branch's evaluations, which come every branch_examples / ``branch_evals`` examples
    (the same examples apart at every k), of each interval's mean minibatch loss."""

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


class Study(BaseModel):
    """What a study searches, over which workload, for how many trials."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              strict=True, allow_inf_nan=False)

    name: str = Field(min_length=1)
    space: SpaceFn
    workload: str = "digits"
    trials: int = Field(default=20, gt=0)
    fixed: dict[str, Any] = Field(default_factory=dict)
    sampler_seed: int = 0
    max_concurrent_trials: int | None = Field(default=None, gt=0)
    asha: Asha | None = None
    max_failures: int = Field(default=2, ge=0)
    """Times Tune retries a trial whose process died (from its last checkpoint)."""
    target: float | None = None
    """Threshold on the objective for steps/examples/time to target (default: the workload's):
    the trials table's at-target columns, ``stop_at_target`` and the frontier use it."""
    targets: list[float] = Field(default_factory=list)
    """More thresholds at which the report also measures the frontier and the critical batch
    size from the history (B_crit as a function of the target), besides ``target``."""
    protocol: Literal["joint", "per_batch_size", "branched"] = "joint"
    """joint: one search over everything (batch size included), TPE by default.
    per_batch_size (Shallue et al. 2018): every batch size in ``batch_sizes`` (and every norm
    in ``norms``, if given) gets ``trials`` trials of its own search over the rest,
    quasi-random (Optuna's QMC sampler) by default, so every frontier point is tuned alike."""
    batch_sizes: list[int] = Field(default_factory=list)
    norms: list[str] = Field(default_factory=list)
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    """per_batch_size only: the budgets every batch size (and norm) is run under, each its
    ``budget`` with its own setting, e.g. ``[{"budget": "epochs", "epochs": 8},
    {"budget": "steps", "budget_steps": 400}]`` (Hoffer et al. 2017: a steps budget gives every
    batch size the same number of updates); the report compares their gaps."""
    sampler: Literal["tpe", "qmc", "random"] | None = None
    """None: tpe for the joint protocol, qmc for per_batch_size."""
    multi_objective: bool = False
    """Search the Pareto front of (the objective, seconds to target) with Optuna's
    multi-objective sampling instead of the objective alone (a trial that never reaches the
    target counts as infinitely slow); ASHA cannot be combined with it."""
    optuna_intermediate_values: bool = False
    """Also write every evaluation's objective into Optuna as an intermediate value (for
    Optuna's own plots and dashboards); off by default: nothing prunes on them."""
    initial_points: list[dict[str, Any]] = Field(default_factory=list)
    """Parameter values (by Optuna parameter name) to try first, e.g. one per normalization;
    enqueued in the Optuna study, then the sampler takes over."""
    description: str = ""
    storage: str | None = None
    """Where the Optuna studies live (lbt_study.storage): an Optuna storage URL
    (``postgresql://USER@HOST:PORT/DB``, ``sqlite:///PATH``) or ``journal:PATH``; None: SQLite
    in the run directory. ``lbt-study run --storage`` overrides it."""
    log: list[Literal["tensorboard", "mlflow", "csv"]] = Field(default_factory=list)
    """Ray Tune's own loggers to switch on, every evaluation at its examples seen
    (lbt_study.integrations); ``--log`` overrides it."""
    stop_when: StopWhen | None = None
    """Adaptive rounds until B_crit's interval is narrow enough (per_batch_size only; ``trials``
    is then round 0's trials per batch size): see ``StopWhen``."""
    branched: Branched | None = None
    """protocol="branched": the base run and its branches (see ``Branched``)."""

    @model_validator(mode="after")
    def _check(self) -> Study:
        known = set(TrainConfig.model_fields)
        unknown = sorted(set(self.fixed) - known)
        if unknown:
            hints = "".join(did_you_mean(k, known) for k in unknown)
            raise ValueError(f"fixed has unknown keys {unknown}{hints}; known: "
                             f"{', '.join(sorted(known))}")
        for key in ("workload", "target"):
            if key in self.fixed:
                raise ValueError(f"set the {key} with Study({key}=...), not in fixed")
        if self.protocol == "per_batch_size":
            if not self.batch_sizes:
                raise ValueError("protocol 'per_batch_size' needs batch_sizes, e.g. [32, 128]")
            taken = sorted({"batch_size", *(["norm"] if self.norms else [])} & set(self.fixed))
            if taken:
                raise ValueError(f"protocol 'per_batch_size' sets {taken} itself; "
                                 "remove them from fixed")
        elif self.batch_sizes or self.norms or self.budgets:
            raise ValueError("batch_sizes, norms and budgets belong to "
                             "protocol='per_batch_size'")
        self._check_budgets()
        if self.multi_objective and self.asha is not None:
            raise ValueError("ASHA needs a single objective: drop asha or multi_objective")
        if self.storage is not None:
            parse_storage(self.storage)
        if self.protocol == "branched" or self.branched is not None:
            check_branched(self)
        if self.stop_when is not None:
            check_stop_when(self)
        return self

    def _check_budgets(self) -> None:
        """Each budget names itself and sets only budget settings; fixed then sets none."""
        allowed = {"budget", *BUDGET_SETTINGS}
        for budget in self.budgets:
            extra = sorted(set(budget) - allowed)
            if "budget" not in budget or extra:
                raise ValueError(f"each of budgets names its 'budget' and sets only "
                                 f"{sorted(BUDGET_SETTINGS)}; got {budget}")
        names = [b["budget"] for b in self.budgets]
        if len(set(names)) < len(names):
            raise ValueError(f"budgets repeats a budget: {names}")
        taken = sorted(allowed & set(self.fixed)) if self.budgets else []
        if taken:
            raise ValueError(f"budgets sets {taken} for every trial; remove them from fixed")

    def cells(self) -> list[Cell]:
        """The searches the study runs: one for the joint protocol, one per batch size (and
        norm) for per_batch_size, each with its own Optuna study in the run's database."""
        if self.protocol == "joint":
            return [Cell(self.name, {}, self.trials)]
        if self.protocol == "branched" and self.branched is not None:
            return branched_cells(self.name, self.branched)
        norms: list[str | None] = list(self.norms) or [None]
        budgets: list[dict[str, Any]] = list(self.budgets) or [{}]
        return [
            Cell(f"{self.name}/B={b}" + (f"/norm={n}" if n else "")
                 + (f"/budget={u['budget']}" if u else ""),
                 {"batch_size": b, **({"norm": n} if n else {}), **u}, self.trials)
            for b in self.batch_sizes for n in norms for u in budgets
        ]

    @property
    def sampler_name(self) -> str:
        return self.sampler or ("qmc" if self.protocol == "per_batch_size" else "tpe")

    @property
    def total_trials(self) -> int:
        return sum(cell.trials for cell in self.cells())

    def trial_values(self, suggested: dict[str, Any],
                     target: float | None = None) -> dict[str, Any]:
        """One trial's config values: fixed settings plus the space's, which may not overlap."""
        return merge_values(self.base_values(target), suggested)

    def base_values(self, target: float | None = None) -> dict[str, Any]:
        """What every trial shares: the fixed settings, the workload and the study's target
        (``target``: this study's or its workload's), as plain picklable values."""
        return {**self.fixed, "workload": self.workload,
                **({"target": target} if target is not None else {})}


BUDGET_SETTINGS = ("epochs", "budget_steps", "budget_examples", "budget_seconds")
"""The settings of a budget (``TrainConfig.budget``); ``epochs`` also caps a seconds budget."""


def check_stop_when(study: Study) -> None:
    """``stop_when`` needs the per-batch-size protocol over batch sizes alone, at least 3
    batch sizes (the fit needs 3 points) and a budget that round 0 fits in."""
    if study.protocol != "per_batch_size" or study.norms:
        raise ValueError(f"stop_when needs protocol='per_batch_size' without norms, got "
                         f"protocol={study.protocol!r}, norms={list(study.norms)}")
    if len(set(study.batch_sizes)) < 3:
        raise ValueError(f"stop_when needs at least 3 batch sizes (B_crit is fitted to 3 or "
                         f"more points), got {list(study.batch_sizes)}")
    first = study.trials * len(study.batch_sizes)
    if study.stop_when is not None and study.stop_when.max_trials < first:
        raise ValueError(f"stop_when.max_trials {study.stop_when.max_trials} is below round "
                         f"0's {study.trials} trials x {len(study.batch_sizes)} batch sizes = "
                         f"{first}")


BRANCH_SETS = ("batch_size", "save_states_at", "states_dir", "init_state")


def check_branched(study: Study) -> None:
    """A branched study has its settings, one base run, and leaves the base batch size and
    the branch states to the protocol."""
    b = study.branched
    if b is None or study.protocol != "branched":
        raise ValueError("protocol='branched' and branched=Branched(...) go together")
    if "trials" in study.model_fields_set and study.trials != 1:
        raise ValueError(f"a branched study runs one base trial (trials=1), got trials="
                         f"{study.trials}; the branches are fractions x ks")
    taken = sorted(set(BRANCH_SETS) & set(study.fixed))
    if taken:
        raise ValueError(f"protocol 'branched' sets {taken} itself; remove them from fixed")
    if study.asha is not None or study.multi_objective or study.stop_when is not None:
        raise ValueError("protocol 'branched' takes no asha, multi_objective or stop_when")


def branched_cells(name: str, b: Branched) -> list[Cell]:
    """NAME/base (one trial at B0, saving states) and NAME/branches (fractions x ks; the
    runner gives each its config: lbt_study.branches; preflight checks the largest batch)."""
    fractions = ",".join(f"{f:g}" for f in b.fractions)
    return [Cell(f"{name}/base", {"batch_size": b.base_batch_size, "save_states_at": fractions},
                 1),
            Cell(f"{name}/branches", {"batch_size": b.ks[-1] * b.base_batch_size},
                 len(b.fractions) * len(b.ks))]


def check_adaptive(study: Study, target: float | None) -> StopWhen:
    """The study's stop rule, checked again as a ``UserError`` (``--trials`` copies the study
    without validating it); B_crit comes from steps to target, so a target is needed."""
    if study.stop_when is None:
        raise UserError("an adaptive run needs a study with stop_when=StopWhen(...)")
    try:
        check_stop_when(study)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if target is None:
        raise UserError("stop_when needs a target (Study(target=...) or the workload's): "
                        "B_crit comes from steps to target")
    return study.stop_when


CONFIG_KEY = "lbt_config"
"""Where the space's returned dict travels in a Tune config (Ray's OptunaSearch merges the
raw Optuna parameters into the config too; those are the sampler's, not the trial's)."""


def space_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial-config values of a Tune config: what the space returned, else its params."""
    return dict(config.get(CONFIG_KEY, config))


@dataclass(frozen=True)
class Cell:
    """One search of a study: its Optuna study name, the values the protocol fixes for it
    (batch size, norm), and its number of trials."""

    study_name: str
    overrides: dict[str, Any]
    trials: int

    def apply(self, suggested: dict[str, Any]) -> dict[str, Any]:
        """The space's values with the protocol's; the space may not set those itself."""
        taken = sorted(set(self.overrides) & set(suggested))
        if taken:
            raise UserError(f"the per_batch_size protocol sets {taken}; the space may not")
        return {**suggested, **self.overrides}


def suggest(study: Study, trial: Any) -> dict[str, Any]:
    """The trial-config values the space gives for one Optuna trial: the dict it returns, or
    its suggested parameters when it returns None."""
    try:
        returned = study.space(trial)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"space function raised {type(exc).__name__}: {exc}") from None
    if returned is not None and not isinstance(returned, dict):
        raise UserError(f"space function must return a dict or None, got {type(returned).__name__}")
    return dict(trial.params) if returned is None else returned


def merge_values(base: dict[str, Any], suggested: dict[str, Any]) -> dict[str, Any]:
    overlap = sorted(set(suggested) & set(base))
    if overlap:
        raise UserError(f"space and fixed both set {overlap}; set each key in one place")
    return {**base, **suggested}


def load_spec(path: str | Path) -> tuple[Study, Any]:
    """Execute a spec file and return its ``study`` and the module (for pickling by value)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    if path.suffix != ".py":
        raise UserError(f"spec must be a Python file ending in .py, got {path.name}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"lbt_spec_{digest}"  # stable, so pickles made by reference load after a restart
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"cannot load spec {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UserError(f"spec {path} has a syntax error at line {exc.lineno}: {exc.msg}") from None
    except UserError:
        raise
    except ValidationError as exc:
        raise UserError(f"spec {path}: invalid Study: {validation_line(exc)}") from None
    except Exception as exc:  # the spec is user code: any failure is a user error
        raise UserError(f"spec {path} raised {type(exc).__name__}: {exc}") from None
    study = getattr(module, "study", None)
    if not isinstance(study, Study):
        got = "nothing" if study is None else type(study).__name__
        raise UserError(
            f"spec {path} must define `study = Study(name=..., space=..., ...)`, "
            f"but `study` is {got}"
        )
    return study, module
