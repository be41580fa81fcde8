"""The measurement contract: what one measurement of a trial provides, on one page.

A measurement is a ``Measurement`` subclass in its own module of this package, named by one
``Declared`` line of the registry (``lbt_study.train.measurements.MEASUREMENTS``), which also
declares its columns with their meanings (the result tables' schema reads them there). The
smallest complete one is ``weight_distance.py``; ``noise_scale.py`` uses the step hooks,
``precise_bn.py`` the evaluation context, ``swa.py`` the final model and the checkpoint state.

A trial builds every registered measurement once (``build``), then calls those it built, in
registry order, on every worker, at fixed points:

==============================  ===========================================================
``build(parts)`` (classmethod)  after the trial is assembled (model placed, optimizer made,
                                DDP wrapped), before a checkpoint's or a branch's weights are
                                loaded: the measurement, or None when it is off or does not
                                apply to this trial
``about(parts)`` (classmethod)  trial-level keys of the first and last rows, built or not:
                                why it is not taken (``gns_simple_reason``)
``start_step(step, plan)``      every step, after ``zero_grad``, before the first micro-batch
``after_backward()``            after each micro-batch's backward (gradients accumulated)
``local_bucket(bucket)``        under DDP, on the synchronised backward: each gradient bucket
``reduced_bucket(tensor)``      before and after its all-reduce (one communication hook
                                serves every measurement; none is registered when no
                                measurement asks)
``end_step()``                  after the last backward, before the optimizer step
``after_update(step)``          after the optimizer step (outside the step's timing)
``due(step, row)``              at every evaluation: whether this one is measured (the
                                schedule ``when``; every evaluation by default; ``row``:
                                the evaluation's losses and metrics so far)
``around_evaluation(model, s)`` a context around the loss/metric evaluation (when due)
``evaluation(model, step)``     the declared evaluation columns (when due)
``final_model(model, step)``    at the end: the model the last evaluation is of
``final(model)``                at the end: the declared final columns
``final_when_off()`` (class)    the final columns of a trial that did not build it
``state_dict()``                what a checkpoint keeps, so that a resumed trial ends as an
``load_state_dict(state, s)``   uninterrupted one (None: nothing)
==============================  ===========================================================

Every hook is optional: the base class does nothing, and only the hooks a measurement
overrides are called. Rules the trial relies on:

- Rows: every declared evaluation column is in every evaluation row, the value or NaN (off,
  not due, or unmeasurable); values are Python scalars, the same on every worker.
- Collectives: hooks run on every worker in the same order, so a hook may all-reduce; ``due``
  must give every worker the same answer (a function of the step, as ``Schedule`` is).
- Nothing else changes: a measurement leaves the training as it found it (weights, gradients,
  buffers, modes, random state), or the same trial would train differently with it on.
- Cost: the seconds of each measurement's evaluation-time work (``around_evaluation``,
  ``evaluation``, ``final_model``, ``final``) are accumulated per measurement, device
  synchronised (``ActiveMeasurements.seconds``, kept in checkpoints); step hooks run inside
  the training step and count in its time (``train_seconds``, ``step_time_*``), where a DDP
  communication hook could not be told apart anyway.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any, Protocol

import torch.distributed as dist
from torch import Tensor, nn

from lbt_study.train.batching import BatchPlan
from lbt_study.train.setup import Parts

Row = dict[str, float | int | str | None]
"""One reported row: column -> scalar."""


class Schedule(Protocol):
    """When a measurement is taken at an evaluation."""

    def due(self, step: int, row: Row | None = None) -> bool:
        """Whether the evaluation after step ``step`` measures (the same on every worker);
        ``row``: the evaluation's row so far (losses and metrics, all-reduced), or None
        around the evaluation, before it has one."""
        ...


class EveryEvaluation:
    """Every evaluation (the default)."""

    def due(self, step: int, row: Row | None = None) -> bool:
        return True

    def __repr__(self) -> str:
        return "EveryEvaluation()"


EVERY_EVALUATION = EveryEvaluation()


class EveryNthEvaluation:
    """Every ``every``-th of the trial's planned evaluations, counted from step 0, and the
    last planned one; an unplanned evaluation (the last of a trial whose seconds budget ran
    out) is always measured. A function of the step alone, so a resumed trial measures where
    an uninterrupted one does."""

    def __init__(self, every: int, planned: Iterable[int]) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        steps = sorted(planned)
        self.every, self.last = every, steps[-1] if steps else 0
        self.index = {step: i for i, step in enumerate(steps)}

    @classmethod
    def of(cls, parts: Parts, every: int) -> EveryNthEvaluation:
        """For the trial's own evaluation schedule."""
        return cls(every, parts.schedule.eval_steps(parts.cfg))

    def due(self, step: int, row: Row | None = None) -> bool:
        i = self.index.get(step)
        return i is None or i % self.every == 0 or step == self.last


def unmeasured(columns: Iterable[str]) -> Row:
    """NaN for each column: a measurement off or not due."""
    return dict.fromkeys(columns, math.nan)


class Measurement:
    """One measurement of a trial; override what it needs (see the module for when each
    hook runs)."""

    when: Schedule = EVERY_EVALUATION
    """At which evaluations ``around_evaluation`` and ``evaluation`` run."""

    @classmethod
    def build(cls, parts: Parts) -> Measurement | None:
        """The measurement for this trial, or None when it is off or does not apply."""
        raise NotImplementedError(f"{cls.__name__}.build")

    @classmethod
    def about(cls, parts: Parts) -> Row:
        """Trial-level keys of the first and last rows, built or not (declared ``about``)."""
        return {}

    @classmethod
    def final_when_off(cls) -> Row:
        """The declared final columns of a trial that did not build it (absent by default)."""
        return {}

    # -- every step -------------------------------------------------------------------------

    def start_step(self, step: int, plan: BatchPlan) -> None:
        """Step ``step`` begins, with the batch plan of its phase."""

    def after_backward(self) -> None:
        """A micro-batch's backward is done (``.grad`` holds the accumulation so far)."""

    def local_bucket(self, bucket: dist.GradBucket) -> None:
        """Under DDP: a gradient bucket of this worker, before the all-reduce."""

    def reduced_bucket(self, reduced: Tensor) -> None:
        """Under DDP: the same bucket all-reduced (averaged over workers)."""

    def end_step(self) -> None:
        """The step's gradients are complete; the optimizer has not stepped."""

    def after_update(self, step: int) -> None:
        """The optimizer has stepped (weights of step ``step``)."""

    # -- evaluations ------------------------------------------------------------------------

    def due(self, step: int, row: Row | None = None) -> bool:
        """Whether the evaluation after step ``step`` takes this measurement (``row``: its
        row so far; None around the evaluation). Called once per evaluation with the row."""
        return self.when.due(step, row)

    def around_evaluation(self, model: nn.Module,
                          step: int) -> contextlib.AbstractContextManager[None]:
        """A context around the evaluation of ``model`` (the trial's model, or the final
        model ``final_model`` gave)."""
        return contextlib.nullcontext()

    def evaluation(self, model: nn.Module, step: int) -> Row:
        """The declared evaluation columns at this evaluation."""
        return {}

    # -- the end ----------------------------------------------------------------------------

    def final_model(self, model: nn.Module, step: int) -> nn.Module:
        """The model the last evaluation is of (``model`` unless this measurement replaces
        it)."""
        return model

    def final(self, model: nn.Module) -> Row:
        """The declared final columns, of the final model."""
        return {}

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> Any:
        """What a checkpoint keeps (tensors, numbers, dicts of them; None: nothing). Called
        on every worker."""
        return None

    def load_state_dict(self, state: Any, step: int) -> None:
        """Continue from a checkpoint taken after step ``step``."""
