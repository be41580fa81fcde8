"""The workload contract: everything a study needs to know about a model and its data.

A workload provides
- ``models``: named factories ``(NormSpec) -> nn.Module``; every built-in model takes the
  normalization choice;
- ``load_data(seed)``: a fixed, seeded train/validation split as in-memory tensors;
- ``loss``: the training loss (mean over the batch), e.g. ``F.cross_entropy``;
- ``metrics``: per-example metrics, each summed over a batch, with a declared direction; the
  loss is always measured as well (as ``loss``, minimised);
- ``objective``: the metric (on the validation set) the search optimises;
- ``target``: an optional threshold on the objective for steps/examples/time to target;
- ``augment``: optional ``(x_batch, generator) -> x_batch`` applied to training micro-batches
  only (on the training device, as tensors; e.g. random crops and flips).

Built-in workloads are registered by name; a user's own is named ``package.module:attr``
where ``attr`` is a ``Workload`` or a zero-argument function returning one.
See ``lbt_study/train/workloads/template.py`` for a copyable example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from lbt_study.errors import UserError, one_line, unknown_name
from lbt_study.train.norms import NormSpec

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Data:
    """A train/validation split held in memory."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_val) != len(self.y_val):
            raise ValueError("inputs and labels differ in length")


@dataclass(frozen=True)
class Metric:
    """A per-example metric: ``fn(outputs, targets)`` returns the batch *sum*."""

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    direction: Direction


def correct_count(outputs: Tensor, targets: Tensor) -> Tensor:
    """Number of examples whose arg-max class equals the label."""
    return (outputs.argmax(dim=1) == targets).sum()


ACCURACY = Metric("accuracy", correct_count, "maximize")


@dataclass(frozen=True)
class Workload:
    """A model family, its data, loss, metrics and target."""

    name: str
    models: Mapping[str, Callable[[NormSpec], nn.Module]]
    load_data: Callable[[int], Data]
    loss: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    metrics: tuple[Metric, ...] = (ACCURACY,)
    objective: str = "accuracy"
    target: float | None = None
    description: str = ""
    default_model: str | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    extras: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError(f"workload {self.name!r} declares no models")
        names = {m.name for m in self.metrics} | {"loss"}
        if self.objective not in names:
            raise ValueError(f"objective {self.objective!r} is not one of {sorted(names)}")

    @property
    def objective_direction(self) -> Direction:
        """Declared by the metric, never guessed from its name."""
        if self.objective == "loss":
            return "minimize"
        return next(m.direction for m in self.metrics if m.name == self.objective)

    def make_model(self, model: str | None, norm: NormSpec) -> nn.Module:
        name = model or self.default_model or next(iter(self.models))
        if name not in self.models:
            raise unknown_name(f"model of workload {self.name!r}", name, list(self.models))
        return self.models[name](norm)


_BUILTIN: dict[str, str] = {
    "charlm": "lbt_study.train.workloads.charlm:WORKLOAD",
    "cifar": "lbt_study.train.workloads.cifar:WORKLOAD",
    "digits": "lbt_study.train.workloads.digits:WORKLOAD",
    "linreg": "lbt_study.train.workloads.linreg:WORKLOAD",
}


def builtin_workloads() -> list[str]:
    return sorted(_BUILTIN)


def get_workload(name: str) -> Workload:
    """A built-in workload by name, or a user's by ``module:attr``. A user's module that
    does not import, an attribute that is not a Workload (or a function that fails to build
    one, or builds one the contract rejects) is a one-line ``UserError`` naming it."""
    target = _BUILTIN.get(name)
    if target is None and ":" not in name:
        raise unknown_name("workload", name, [*builtin_workloads(), "<module>:<attr>"])
    module_name, _, attr = (target or name).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import workload module {module_name!r} (workload {name!r}): "
                        f"{' '.join(str(exc).split())}") from None
    except Exception as exc:  # the user's module raised while importing
        raise UserError(f"workload {name!r}: importing {module_name!r} raised "
                        f"{one_line(exc)}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise UserError(f"module {module_name!r} has no attribute {attr!r} (workload {name!r})")
    what = f"workload {name!r} is"
    if callable(obj) and not isinstance(obj, Workload):
        try:
            obj = obj()
        except UserError as exc:
            raise UserError(f"workload {name!r}: {exc}") from None
        except Exception as exc:
            raise UserError(f"workload {name!r}: calling {attr}() raised "
                            f"{one_line(exc)}") from None
        what = f"workload {name!r}: {attr}() returned"
    if not isinstance(obj, Workload):
        raise UserError(f"{what} a {type(obj).__name__}, not an lbt_study Workload")
    return obj


def cast_inputs(data: Data, dtype: torch.dtype) -> Data:
    """Floating-point inputs in ``dtype``; integer inputs (token ids) unchanged."""

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    return Data(cast(data.x_train), data.y_train, cast(data.x_val), data.y_val)
