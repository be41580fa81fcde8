"""One trial's configuration: strict (unknown keys fail) and checked before any work starts."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lbt_study.errors import UserError
from lbt_study.norms import NORMS

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "constant"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "lars", "lamb")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")


class TrainConfig(BaseModel):
    """Everything one training run needs. Field names are the trials-table column names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    weight_decay: float = Field(default=0.0, ge=0)
    trust_coefficient: float = Field(default=0.001, gt=0)
    """LARS's trust coefficient (eta in You et al. 2017)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    swa_start: float | None = Field(default=None, gt=0, lt=1)
    """Average the weights (torch.optim.swa_utils) from this fraction of the steps on; the
    last evaluation is of the averaged model (normalization statistics recomputed)."""
    warmup_epochs: float = Field(default=0.0, ge=0)
    schedule: str = "cosine"

    epochs: float = Field(default=10.0, gt=0)
    eval_every_examples: int | None = Field(default=None, gt=0)
    train_eval_examples: int = Field(default=512, gt=0)
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    measure_gns: bool = True
    """Gradient noise scale from worker-local vs all-reduced gradients (DDP) or micro-batch vs
    accumulated gradients (one worker); NaN for one worker without accumulation."""
    gns_ema: float = Field(default=0.99, ge=0, lt=1)
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

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
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
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs {self.warmup_epochs} must be shorter than training "
                f"(epochs {self.epochs})"
            )
        return self

    @property
    def learning_rate(self) -> float:
        """``lr``, or ``base_lr * (B / lr_ref_batch_size) ** lr_scaling_exponent``."""
        if self.lr is not None:
            return self.lr
        base = float(self.base_lr or 0.0)  # set whenever lr is not (checked in _check)
        return base * (self.batch_size / self.lr_ref_batch_size) ** self.lr_scaling_exponent

    def total_steps(self, train_examples: int) -> int:
        return max(1, math.ceil(self.epochs * train_examples / self.batch_size))

    def warmup_steps(self, train_examples: int) -> int:
        return round(self.warmup_epochs * train_examples / self.batch_size)


def parse_config(values: dict[str, object]) -> TrainConfig:
    """A ``TrainConfig`` from a dict, or a one-line ``UserError`` naming the bad field."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise UserError(f"invalid trial config: {validation_line(exc)}") from None


def validation_line(exc: ValidationError) -> str:
    """Pydantic's errors as one line: field, message, given value."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        given = f" (got {err['input']!r})" if loc != "config" and "input" in err else ""
        parts.append(f"{loc}: {msg}{given}")
    return "; ".join(parts)
