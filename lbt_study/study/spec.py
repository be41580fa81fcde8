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
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lbt_study.errors import UserError
from lbt_study.study.protocols import PROTOCOLS, Branched, Cell, Protocol, StopWhen
from lbt_study.study.storage import parse_storage
from lbt_study.train.config import (
    BUDGET_SETTINGS,
    DEFAULT_CROSSING,
    PROTOCOL_SETS,
    TrainConfig,
    TrainSettings,
    did_you_mean,
    validation_line,
)
from lbt_study.train.names import NORMS

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


class Study(BaseModel):
    """What a study searches, over which workload, for how many trials."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              strict=True, allow_inf_nan=False)

    name: str = Field(min_length=1)
    space: SpaceFn
    workload: str = "digits"
    trials: int = Field(default=20, gt=0)
    fixed: dict[str, Any] = Field(default_factory=dict)
    sampler_seed: int = Field(default=0, ge=0)
    max_concurrent_trials: int | None = Field(default=None, gt=0)
    asha: Asha | None = None
    max_failures: int = Field(default=2, ge=0)
    """Times Tune retries a trial whose process died (from its last checkpoint)."""
    target: float | None = None
    """Threshold on the objective for steps/examples/time to target (default: the workload's):
    the trials table's at-target columns, ``stop_at_target`` and the frontier use it."""
    target_crossing: Literal["first", "confirmed"] = DEFAULT_CROSSING
    """Which evaluation counts as reaching the target (``lbt_study.records.targets``): first,
    the first evaluation that reaches it (Shallue et al. 2018's steps to result); confirmed,
    the first whose next evaluation reaches it too. The report gives B_crit under both."""
    targets: list[float] = Field(default_factory=list)
    """More thresholds at which the report also measures the frontier and the critical batch
    size from the history (B_crit as a function of the target), besides ``target``."""
    protocol: str = "joint"
    """How the trials are laid out (``lbt_study.study.protocols``, one module each): joint:
    one search over everything (batch size included), TPE by default. per_batch_size
    (Shallue et al. 2018): every batch size in ``batch_sizes`` (and every norm in ``norms``,
    if given) gets ``trials`` trials of its own search over the rest, quasi-random (Optuna's
    QMC sampler) by default, so every frontier point is tuned alike. adaptive: per_batch_size
    in rounds until ``stop_when`` holds (``per_batch_size`` with ``stop_when`` means the
    same). branched: Merrill et al. 2025's branched critical batch size (``branched``)."""
    batch_sizes: list[int] = Field(default_factory=list)
    norms: list[str] = Field(default_factory=list)
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    """per_batch_size only: the budgets every batch size (and norm) is run under, each its
    ``budget`` with its own setting, e.g. ``[{"budget": "epochs", "epochs": 8},
    {"budget": "steps", "budget_steps": 400}]`` (Hoffer et al. 2017: a steps budget gives every
    batch size the same number of updates); the report compares their gaps."""
    sampler: Literal["tpe", "qmc", "random"] | None = None
    """None: the protocol's (tpe for joint and branched, qmc for per_batch_size and
    adaptive)."""
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
    """Where the Optuna studies live (lbt_study.study.storage): an Optuna storage URL
    (``postgresql://USER@HOST:PORT/DB``, ``sqlite:///PATH``) or ``journal:PATH``; None: SQLite
    in the run directory. ``lbt-study run --storage`` overrides it."""
    log: list[Literal["tensorboard", "mlflow", "csv"]] = Field(default_factory=list)
    """Ray Tune's own loggers to switch on, every evaluation at its examples seen
    (lbt_study.study.integrations); ``--log`` overrides it."""
    stop_when: StopWhen | None = None
    """protocol="adaptive": rounds until B_crit's interval is narrow enough (``trials`` is
    then round 0's trials per batch size): see ``StopWhen``."""
    branched: Branched | None = None
    """protocol="branched": the base run and its branches (see ``Branched``)."""

    @model_validator(mode="before")
    @classmethod
    def _adaptive_spelling(cls, data: object) -> object:
        """``protocol="per_batch_size"`` with ``stop_when`` is the adaptive protocol (the
        spelling before protocols were modules; run directories keep it in spec.py)."""
        if isinstance(data, dict) and data.get("stop_when") is not None \
                and data.get("protocol") == "per_batch_size":
            return {**data, "protocol": "adaptive"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Study:
        known = set(TrainSettings.model_fields)
        internal = sorted(set(self.fixed) & set(PROTOCOL_SETS))
        if internal:
            raise ValueError(f"fixed sets {internal}: the protocol sets those, not a study")
        known |= set(TrainConfig.model_fields) - set(PROTOCOL_SETS)  # the testing aids
        unknown = sorted(set(self.fixed) - known)
        if unknown:
            hints = "".join(did_you_mean(k, known) for k in unknown)
            raise ValueError(f"fixed has unknown keys {unknown}{hints}; known: "
                             f"{', '.join(sorted(known))}")
        for key in ("workload", "target"):
            if key in self.fixed:
                raise ValueError(f"set the {key} with Study({key}=...), not in fixed")
        protocol = self._protocol()
        self._check_protocol_fields(protocol)
        self._check_lists()
        protocol.check(self)
        self._check_budgets()
        if self.multi_objective and self.asha is not None:
            raise ValueError("ASHA needs a single objective: drop asha or multi_objective")
        if self.storage is not None:
            parse_storage(self.storage)
        return self

    def _protocol(self) -> Protocol:
        if self.protocol not in PROTOCOLS:
            hint = did_you_mean(self.protocol, PROTOCOLS)
            raise ValueError(f"unknown protocol {self.protocol!r}{hint}; known: "
                             f"{', '.join(PROTOCOLS)}")
        return PROTOCOLS[self.protocol]

    def _check_protocol_fields(self, protocol: Protocol) -> None:
        """A field that belongs to other protocols (batch_sizes, stop_when, ...) is refused,
        with the protocols it belongs to."""
        for name in sorted(set().union(*(p.uses for p in PROTOCOLS.values())) - protocol.uses):
            if getattr(self, name):
                owners = [p.name for p in PROTOCOLS.values() if name in p.uses]
                why = " (stop_when makes a study adaptive)" if self.stop_when else ""
                raise ValueError(f"{name} belongs to protocol {' or '.join(map(repr, owners))}, "
                                 f"not {self.protocol!r}{why}")

    def _check_lists(self) -> None:
        """Names not blank; batch_sizes, norms, targets and log each without repeats (a
        repeated batch size would be two searches sharing one Optuna study: twice the
        trials, unequal tuning), batch sizes positive, norms known."""
        for key in ("name", "workload"):
            if not getattr(self, key).strip():
                raise ValueError(f"{key} is blank ({getattr(self, key)!r}); give a name")
        for key in ("batch_sizes", "norms", "targets", "log"):
            values = list(getattr(self, key))
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{key} repeats {repeated} (got {values}); list each once")
        small = [b for b in self.batch_sizes if b < 1]
        if small:
            raise ValueError(f"batch_sizes must be >= 1, got {small} in {self.batch_sizes}")
        for norm in self.norms:
            if norm not in NORMS:
                raise ValueError(f"unknown norm {norm!r} in norms{did_you_mean(norm, NORMS)}; "
                                 f"known: {', '.join(NORMS)}")

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
        """The searches the study runs, in order (its protocol's ``cells``), each with its
        own Optuna study in the run's database."""
        return self._protocol().cells(self)

    @property
    def sampler_name(self) -> str:
        return self.sampler or self._protocol().sampler

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


_SPEC_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (Study, Asha, Branched, StopWhen)}
"""The models a spec builds, by the title of their ValidationError (for the allowed keys)."""


CONFIG_KEY = "lbt_config"
"""Where the space's returned dict travels in a Tune config (Ray's OptunaSearch merges the
raw Optuna parameters into the config too; those are the sampler's, not the trial's)."""


def space_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial-config values of a Tune config: what the space returned, else its params."""
    return dict(config.get(CONFIG_KEY, config))


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


def merge_values(base: dict[str, Any], suggested: dict[str, Any],
                 as_given: bool = False) -> dict[str, Any]:
    """One trial's config values, the one place they are put together: the study's shared
    values (``base``: fixed, workload, target; ``Study.base_values``) and the space's with
    its cell's (``suggested``; from a Tune config, ``space_values``), which may not overlap.
    ``as_given``: never raise (a trial whose values overlap fails, and its row records the
    values as given)."""
    overlap = sorted(set(suggested) & set(base))
    if overlap and not as_given:
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
        model = _SPEC_MODELS.get(exc.title, Study)
        raise UserError(f"spec {path}: invalid {model.__name__}: "
                        f"{validation_line(exc, model)}") from None
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
