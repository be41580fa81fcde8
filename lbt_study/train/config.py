"""One trial's configuration: strict and checked before any work starts.

Unknown keys fail, values keep their types (the string "64" is not a batch size, ``True`` is
not a number), and non-finite numbers are refused. This module only validates: the batch
arithmetic that follows from a config (steps, warmup, the scaled learning rate, micro-batches)
is ``lbt_study.train.batching.BatchSchedule``.
"""

from __future__ import annotations

import difflib
import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lbt_study.errors import UserError
from lbt_study.train.names import NORMS, OPTIMIZERS, SCHEDULES

CROSSINGS = {"first": 1, "confirmed": 2}
"""Each target-crossing rule (``Study.target_crossing``): how many consecutive evaluations
must reach the target for the first of them to count as the crossing
(``lbt_study.records.targets.time_to_target``)."""
DEFAULT_CROSSING = "first"
"""Shallue et al. 2018's steps to result (README: the crossing rule); the report gives the
critical batch size under both rules."""
CONFIRM = CROSSINGS["confirmed"]
"""The evaluations in a row ``stop_at_target`` waits for by default, so that a trial stopped
at its target has what both rules need."""

BUDGET_SETTINGS = ("epochs", "budget_steps", "budget_examples", "budget_seconds")
"""The settings of a budget (``TrainConfig.budget``); ``epochs`` also caps a seconds budget."""


def checkpoint_step(fraction: float, total_steps: int) -> int:
    """The step nearest ``fraction`` of a constant-batch run of ``total_steps`` (at least 1;
    halves round up): where ``save_states_at`` saves a branch state."""
    return min(total_steps, max(1, math.floor(fraction * total_steps + 0.5)))


def increasing_fractions(values: list[float]) -> bool:
    """Whether ``values`` increase strictly within (0, 1) (checkpoint fractions of a budget)."""
    return all(0 < f < 1 for f in values) and values == sorted(set(values))


class TrainSettings(BaseModel):
    """The settings of one training run a study chooses (in ``fixed``, the space, or by its
    protocol's cells). Every field is a trials-table column of the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    workload: str = "digits"
    model: str | None = None
    norm: str = "batch"
    ghost_batch_size: int | None = None
    norm_groups: int = 4

    batch_size: int = Field(gt=0)
    workers: int = Field(default=1, gt=0)
    accumulation_steps: int = Field(default=1, gt=0)

    optimizer: str = "sgd"
    lr: float | None = Field(default=None, gt=0)
    base_lr: float | None = Field(default=None, gt=0)
    lr_ref_batch_size: int = Field(default=256, gt=0)
    lr_scaling_exponent: float = 1.0
    momentum: float = Field(default=0.9, ge=0, lt=1)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    """Adam-family (adamw, lamb) first-moment decay."""
    beta2: float = Field(default=0.999, ge=0, lt=1)
    """Adam-family second-moment decay (at ``beta2_ref_batch_size`` under the half-life rule)."""
    beta2_rule: Literal["fixed", "half_life"] = "fixed"
    """fixed: ``beta2`` at every batch size (per step, PyTorch's meaning); half_life: the
    second moment's half-life kept constant in examples, not steps (Marek et al. 2025: small
    batches stay stable when it is fixed in tokens): beta2 ** (B / beta2_ref_batch_size)."""
    beta2_ref_batch_size: int = Field(default=256, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    trust_coefficient: float = Field(default=0.001, gt=0)
    """LARS's trust coefficient (eta in You et al. 2017)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    swa_start: float | None = Field(default=None, gt=0, lt=1)
    """Average the weights (torch.optim.swa_utils) from this fraction of the steps on; the
    last evaluation is of the averaged model (normalization statistics recomputed)."""
    warmup_epochs: float = Field(default=0.0, ge=0)
    schedule: str = "cosine"

    batch_growth: str = ""
    """Smith et al. 2018, grow the batch instead of decaying the lr: "f1:m1,f2:m2" multiplies
    the batch size by m_i from fraction f_i of the example budget on (e.g. "0.5:2,0.75:4").
    The micro-batch grows; workers and accumulation stay. A string, so Optuna can search it."""
    epochs: float = Field(default=10.0, gt=0)
    budget: Literal["epochs", "steps", "examples", "seconds"] = "epochs"
    """What every batch size gets the same of: ``epochs`` of examples (steps = ceil(epochs x
    N / B)), ``budget_steps`` optimizer updates (Hoffer et al. 2017, "train longer, generalize
    better": the same number of updates at every B), ``budget_examples`` examples, or
    ``budget_seconds`` seconds of training (wall clock, evaluations excluded: time to target
    on a fixed budget; the steps and the learning-rate schedule are laid out over ``epochs``,
    the most it may train, and training ends when the seconds are spent)."""
    budget_steps: int | None = Field(default=None, gt=0)
    budget_examples: int | None = Field(default=None, gt=0)
    budget_seconds: float | None = Field(default=None, gt=0)
    eval_schedule: Literal["geometric", "uniform"] = "geometric"
    """When to evaluate, besides step 0 and the last step. geometric: ``evals_per_doubling``
    evaluations per doubling of the examples seen (spacing at most 2^(1/k) - 1: 26% at the
    default k = 3, 19% at 4), so steps to target are resolved alike at every batch size
    (interpolated, the crossing of a smooth curve within 2.6% at k = 3, 0.7% median; 1.2% and
    0.4% at k = 4: tests/test_targets.py); uniform: every
    ``eval_every_examples`` examples (once per epoch without it). Giving
    ``eval_every_examples`` without ``eval_schedule`` chooses uniform."""
    evals_per_doubling: int = Field(default=3, gt=0)
    eval_first_step: int = Field(default=4, ge=1)
    """The geometric schedule's first evaluation after step 0 is the first mark at or past
    this step (every step is a mark early on: steps 1, 2, 3 seldom reach a target and cost
    an evaluation each; a crossing before it is interpolated from step 0)."""
    eval_every_examples: int | None = Field(default=None, gt=0)
    train_eval_examples: int = Field(default=256, gt=0)
    """Examples of the fixed training subset evaluated (train_loss, train_accuracy, the gap)."""
    precise_bn: bool = True
    """Before every evaluation, recompute the running statistics of every batch-statistic
    norm (batch, ghost_batch, sync_batch, hybrid) as the average over a fixed training
    subset of ``precise_bn_examples``, in micro-batches of the training's size, and restore
    the training buffers afterwards: the evaluation measures the model, not statistics left
    stale by the EMA (momentum 0.1 over few steps at a large batch size)."""
    precise_bn_examples: int = Field(default=256, gt=0)
    """Examples of the precise-BN subset (capped at the training set)."""
    seed: int = Field(default=0, ge=0)
    """numpy and scikit-learn take seeds >= 0 only."""
    dtype: Literal["float32", "float64"] = "float32"
    divergence_factor: float | None = Field(default=10.0, gt=1)
    """A minibatch loss above this many times the first step's counts as diverged (besides
    any non-finite loss); None: only non-finite losses."""
    probe_memory: bool = True
    """Before training on a GPU, find the largest micro-batch that fits (all workers agree),
    keeping B by accumulation. On CPU only with ``fault_oom_above``."""
    target: float | None = None
    """The objective threshold of steps/examples/time to target: the study's, else the
    workload's (the runner sets it from the study; not a search setting)."""
    stop_at_target: bool = False
    """End the trial (status ok, ``stopped_at_target`` true) once its objective has reached
    ``target`` at ``stop_at_target_patience`` evaluations in a row: a steps-to-target study
    (Shallue et al. 2018) needs nothing after the target. The learning-rate schedule is still
    laid out over the whole budget (``epochs``)."""
    stop_at_target_patience: int = Field(default=2, ge=1)
    """Evaluations in a row at the target before stopping; 2 by default, the confirmation
    time to target asks for (``CONFIRM``), so the crossing it measures is
    inside the run."""
    checkpoint_every_s: float = Field(default=30.0, ge=0)
    """Seconds between checkpoints of the training state at evaluations (the last evaluation
    is always checkpointed); 0: at every evaluation. A restarted worker group goes back at
    most about this far and trains the steps since again (the same steps: runs are exact)."""
    report_every_s: float = Field(default=1.0, ge=0)
    """Seconds between reports to Ray Tune; each report carries every evaluation row since
    the previous one, so none is lost (progress lines see the latest row at each report);
    0: report every evaluation. A study with ASHA defaults it to 0, as ASHA judges its rungs
    at reports."""
    max_failures: int = Field(default=2, ge=0)
    """Times Ray Train restarts a failed worker group from the last checkpoint."""
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    """Ray placement of a multi-worker trial's workers: PACK onto few nodes, or SPREAD."""
    measure_gns: bool = True
    """Gradient noise scale from worker-local vs all-reduced gradients (DDP) or micro-batch vs
    accumulated gradients (one worker); NaN for one worker without accumulation and for
    sync_batch across workers (``gns_simple_reason`` says why)."""
    gns_ema: float = Field(default=0.99, ge=0, lt=1)
    gns_probe_examples: int = Field(default=512, ge=0)
    """Gradient noise scale (``gns_probe``, with a jackknife standard error) from the
    gradients of this many training examples, a fixed seeded subset (capped at the training
    set): per-example gradients, or chunks of the norm batch size for batch-statistic norms
    (lbt_study.train.measurements.probe.GradientNoiseProbe); 0: off. Its seconds are
    ``gns_probe_seconds`` (part of eval_seconds)."""
    gns_probe_schedule: Literal["sparse", "evaluation"] = "sparse"
    """When the probe measures. sparse: once per 8-fold of the examples seen after the first
    step (the first evaluation at or past each; not step 0), at the last evaluation, and at
    every evaluation from the first that reaches the target until two in a row have (the
    crossing under either ``target_crossing`` rule is always measured): about 3 probes a
    trial of the main job instead of ~15; evaluation: at every evaluation, step 0 included."""
    sharpness_examples: int = Field(default=0, ge=0)
    """Top Hessian eigenvalue at the end of training on this many training examples (0: off)."""
    sharpness_iters: int = Field(default=100, gt=0)
    measure_flops: bool = True
    """Count forward+backward FLOPs per example once (torch's FlopCounterMode), for MFU."""
    launcher: Literal["auto", "ray_train"] = "auto"
    """auto: a 1-worker trial trains in its Tune trial's own process (no worker group, seconds
    less fixed cost); ray_train: every trial runs a Ray Train TorchTrainer."""
    cpus_per_worker: int = Field(default=1, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)

    # GPU path: every "auto" resolves to off on CPU, so CPU results do not depend on these.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA when dtype is float32, fp32 otherwise; bf16: forward, loss
    and evaluation under torch.autocast(bfloat16) (on CPU too, with torch's CPU autocast;
    weights, gradients and optimizer state stay in dtype); fp32: no autocast."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    """auto: on for CUDA when the model has Conv2d layers; on: model and 4-D inputs in
    torch.channels_last memory format (works on CPU too); off: default layout."""
    compile: bool = False
    """torch.compile the model for training steps (evaluation, FLOP counting and the memory
    probe stay eager; checkpoints hold the plain module's weights). Under DDP the module is
    compiled first and the compiled module wrapped in DDP, so no_sync and the noise-scale
    comm hook work unchanged; gradients are then all-reduced after the compiled backward
    rather than overlapped with it."""
    data_on_device: Literal["auto", "on", "off"] = "auto"
    """auto: on CUDA, the whole train/val tensors move to the GPU once when they take under
    a quarter of its free memory, else stay on the CPU pinned, batches copied non-blocking;
    on: always move them; off: keep them in pinned CPU memory. No effect on CPU."""
    tf32: bool = True
    """Allow TF32 tensor-core matmuls and convolutions for float32 work on CUDA
    (torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32, set at the
    start of every run); MFU is then measured against the TF32 peak. No effect on CPU."""
    stratify: bool = False
    """Build every global batch with a fixed share of each class, proportional to its
    frequency, at least one example of each (integer class labels; B at least the number of
    classes; the exact rule: lbt_study.train.stratified_shares)."""

    @model_validator(mode="before")
    @classmethod
    def _uniform_when_spaced(cls, data: object) -> object:
        """``eval_every_examples`` without ``eval_schedule`` means the uniform schedule."""
        if isinstance(data, dict) and data.get("eval_every_examples") is not None \
                and "eval_schedule" not in data:
            return {**data, "eval_schedule": "uniform"}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")
        if (self.lr is None) == (self.base_lr is None):
            raise ValueError(
                f"give exactly one of lr or base_lr, got lr={self.lr}, base_lr={self.base_lr}"
            )
        self.growth_phases()  # raises on a malformed schedule
        if self.precision == "bf16" and self.dtype != "float32":
            raise ValueError(f"precision 'bf16' needs dtype float32, got dtype {self.dtype!r}")
        if self.eval_schedule == "geometric" and self.eval_every_examples is not None:
            raise ValueError(f"eval_every_examples {self.eval_every_examples} belongs to "
                             "eval_schedule 'uniform'; the geometric schedule is set by "
                             "evals_per_doubling")
        if self.stop_at_target and self.target is None:
            raise ValueError("stop_at_target needs a target: the workload declares none; "
                             "set Study(target=...)")
        self._check_budget()
        if self.budget in ("epochs", "seconds") and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs {self.warmup_epochs} must be shorter than training "
                f"(epochs {self.epochs})"
            )
        return self

    def _check_budget(self) -> None:
        """Each budget has its one setting, and only that one."""
        needs = {"steps": "budget_steps", "examples": "budget_examples",
                 "seconds": "budget_seconds"}.get(self.budget)
        for name in ("budget_steps", "budget_examples", "budget_seconds"):
            value = getattr(self, name)
            if (value is not None) != (name == needs):
                wrong = f"needs {name}" if value is None else f"does not use {name} (got {value})"
                raise ValueError(f"budget {self.budget!r} {wrong}; budgets: epochs (epochs), "
                                 "steps (budget_steps), examples (budget_examples), seconds "
                                 "(budget_seconds, with epochs as the most it may train)")
        if needs in ("budget_steps", "budget_examples") and "epochs" in self.model_fields_set:
            raise ValueError(f"budget {self.budget!r} is set by {needs}; epochs (got "
                             f"{self.epochs}) belongs to budget 'epochs'")

    def growth_phases(self) -> list[tuple[float, int]]:
        """[(start fraction, batch multiplier)], starting with (0.0, 1)."""
        phases = [(0.0, 1)]
        for part in filter(None, (p.strip() for p in self.batch_growth.split(","))):
            try:
                frac_text, mult_text = part.split(":")
                frac, mult = float(frac_text), int(mult_text)
            except ValueError:
                raise ValueError(f"batch_growth part {part!r} is not 'fraction:multiplier', "
                                 "e.g. '0.5:2,0.75:4'") from None
            last_frac, last_mult = phases[-1]
            if not (last_frac < frac < 1 and mult > last_mult):
                raise ValueError(
                    f"batch_growth {self.batch_growth!r}: fractions must increase within (0, 1) "
                    f"and multipliers increase from 1, got {frac}:{mult} after "
                    f"{last_frac}:{last_mult}")
            phases.append((frac, mult))
        return phases


class TrainConfig(TrainSettings):
    """Everything one training run needs: its settings, and what the run's protocol
    (``PROTOCOL_SETS``) or a test harness (the ``fault_*`` testing aids) adds, which are no
    trials-table columns (the trial's ``config_as_run`` keeps them)."""

    save_states_at: str = ""
    """Branched critical batch size (Merrill et al. 2025): fractions of the examples budget,
    e.g. "0.1,0.25,0.5", at whose nearest step rank 0 saves the model and optimizer state to
    ``states_dir``/f=<fraction>.pt (``lbt_study.train.branching``). A string: scalar cells."""
    states_dir: str | None = None
    init_state: str | None = None
    """Start from this saved state (model weights and optimizer state, momentum included)
    instead of the initialisation; the learning rate and its schedule are this config's."""
    fault_exit_at_step: int | None = Field(default=None, ge=1)
    """Testing aid: the last worker's process exits (once per trial) before reporting the
    first evaluation at or after this step."""
    fault_oom_above: int | None = Field(default=None, ge=0)
    """Testing aid: behave as if any micro-batch larger than this ran out of memory."""

    @model_validator(mode="after")
    def _check_internals(self) -> TrainConfig:
        self.state_fractions()  # raises on malformed fractions
        return self

    def state_fractions(self) -> list[float]:
        """``save_states_at`` as increasing fractions in (0, 1); it needs ``states_dir``."""
        try:
            fractions = [float(p) for p in self.save_states_at.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"save_states_at {self.save_states_at!r} is not comma-separated "
                             "fractions, e.g. '0.1,0.5'") from None
        if not increasing_fractions(fractions):
            raise ValueError(f"save_states_at {self.save_states_at!r}: fractions must "
                             "increase within (0, 1)")
        return fractions


PROTOCOL_SETS = ("save_states_at", "states_dir", "init_state")
"""Internals a protocol sets (the branched protocol's states): never a study's."""


def parse_config(values: dict[str, object]) -> TrainConfig:
    """A ``TrainConfig`` from a dict, or a one-line ``UserError`` naming the bad field."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise UserError(f"invalid trial config: {validation_line(exc)}") from None


def validation_line(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Pydantic's errors as one line: field, message, given value. An unknown key is shown
    with the close names and every allowed one, from the model it was given to (``model``,
    by default ``TrainConfig``; a nested model's own fields for a key inside it)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = list(fields_at(model or TrainConfig, err["loc"][:-1]))
            key = str(err["loc"][-1])
            msg = (f"unknown key{did_you_mean(key, known)}; allowed: "
                   f"{', '.join(sorted(known))}")
        if not loc:  # a rule over the whole config: its message names the fields
            parts.append(msg)
            continue
        given = f" (got {err['input']!r})" if "input" in err else ""
        parts.append(f"{loc}: {msg}{given}")
    return "; ".join(parts)


def fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The fields of the model found at ``loc`` inside ``model`` (a nested model field, or
    a list or optional of one); ``model``'s own where ``loc`` leads to none."""
    for part in loc:
        field_info = model.model_fields.get(str(part))
        if field_info is None:
            continue  # a list index
        inner = [a for a in (field_info.annotation, *typing.get_args(field_info.annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            break
        model = inner[0]
    return dict(model.model_fields)


def did_you_mean(name: str, known: object) -> str:
    """' (did you mean 'epochs'?)' for a close known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
