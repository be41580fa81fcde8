"""The measurements of one trial: every registry line built, and called at the contract's
points (``contract``), in registry order, with the cost of each accumulated."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from lbt_study.train.batching import BatchPlan
from lbt_study.train.measurements import MEASUREMENTS, Declared
from lbt_study.train.measurements.contract import Measurement, Row, unmeasured
from lbt_study.train.setup import Parts

STEP_HOOKS = ("start_step", "after_backward", "end_step", "after_update")
BUCKET_HOOKS = ("local_bucket", "reduced_bucket")


@dataclass
class Entry:
    """A registry line, its class, and the measurement built for this trial (or None)."""

    declared: Declared
    kind: type[Measurement]
    taken: Measurement | None


def overridden(m: Measurement, hook: str) -> bool:
    """Whether ``m``'s class implements ``hook`` (the base class's does nothing)."""
    return getattr(type(m), hook) is not getattr(Measurement, hook)


def bucket_hook(local: Sequence[Callable], reduced: Sequence[Callable]) -> Callable:
    """One DDP communication hook for every measurement: each bucket to ``local`` before
    the all-reduce (torch's own ``allreduce_hook``, so DDP's result is unchanged) and to
    ``reduced`` after it. It runs only on synchronised backwards, where a bucket holds the
    worker's accumulated gradient."""

    # Unannotated on purpose: DDP checks the annotations against dist.GradBucket and
    # torch.futures.Future, which this module's postponed (string) annotations would fail.
    def hook(state, bucket):  # noqa: ANN001, ANN202
        for observe in local:
            observe(bucket)
        fut = allreduce_hook(None, bucket)

        def after(f: torch.futures.Future[Tensor]) -> Tensor:
            out = f.value()
            for observe in reduced:
                observe(out)
            return out

        return fut.then(after)

    return hook


class ActiveMeasurements:
    """The trial's measurements; the loop calls this, this calls each built one."""

    def __init__(self, parts: Parts, entries: list[Entry]) -> None:
        self.parts, self.entries = parts, entries
        self.taken = [(e.declared.name, e.taken) for e in entries if e.taken is not None]
        self.hooks = {h: [getattr(m, h) for _, m in self.taken if overridden(m, h)]
                      for h in (*STEP_HOOKS, *BUCKET_HOOKS)}
        self.seconds = {e.declared.name: 0.0 for e in entries}
        """Seconds of each measurement's evaluation-time work so far (0 where not taken)."""

    @classmethod
    def build(cls, parts: Parts,
              registry: Sequence[Declared] | None = None) -> ActiveMeasurements:
        """Build every line of ``registry`` (``MEASUREMENTS`` by default) for ``parts``;
        under DDP, register the bucket hook when a measurement observes buckets."""
        entries = []
        for line in MEASUREMENTS if registry is None else registry:
            kind = line.load()
            entries.append(Entry(line, kind, kind.build(parts)))
        active = cls(parts, entries)
        local, reduced = (active.hooks[h] for h in BUCKET_HOOKS)
        if parts.ddp is not None and (local or reduced):
            parts.ddp.register_comm_hook(None, bucket_hook(local, reduced))
        return active

    # -- every step -------------------------------------------------------------------------

    def start_step(self, step: int, plan: BatchPlan) -> None:
        for hook in self.hooks["start_step"]:
            hook(step, plan)

    def after_backward(self) -> None:
        for hook in self.hooks["after_backward"]:
            hook()

    def end_step(self) -> None:
        for hook in self.hooks["end_step"]:
            hook()

    def after_update(self, step: int) -> None:
        for hook in self.hooks["after_update"]:
            hook(step)

    # -- evaluations and the end ------------------------------------------------------------

    def _add(self, name: str, start: float) -> None:
        """Add the seconds since ``start`` (device synchronised) to ``name``'s."""
        if self.parts.device.type == "cuda":
            torch.cuda.synchronize(self.parts.device)
        self.seconds[name] += time.perf_counter() - start

    @contextlib.contextmanager
    def clock(self, name: str) -> Iterator[None]:
        """The seconds inside count as ``name``'s."""
        start = time.perf_counter()
        yield
        self._add(name, start)

    @contextlib.contextmanager
    def around_evaluation(self, model: nn.Module, step: int) -> Iterator[None]:
        """Every due measurement's context, entered in registry order."""
        with contextlib.ExitStack() as stack:
            for name, m in self.taken:
                if overridden(m, "around_evaluation") and m.due(step):
                    stack.enter_context(self._timed(name, m.around_evaluation(model, step)))
            yield

    @contextlib.contextmanager
    def _timed(self, name: str,
               context: contextlib.AbstractContextManager[None]) -> Iterator[None]:
        """``context``, its entry and its exit counted as ``name``'s seconds."""
        start = time.perf_counter()
        with context:
            self._add(name, start)
            yield
            start = time.perf_counter()
        self._add(name, start)

    def evaluation(self, model: nn.Module, step: int, so_far: Row | None = None) -> Row:
        """Every measurement's evaluation columns: measured where taken and due (given the
        evaluation's row ``so_far``), else NaN."""
        row: Row = {}
        for e in self.entries:
            if e.taken is not None and e.taken.due(step, so_far):
                with self.clock(e.declared.name):
                    row.update(e.taken.evaluation(model, step))
            else:
                row.update(unmeasured(e.declared.evaluation))
        return row

    def final_model(self, model: nn.Module, step: int) -> nn.Module:
        """The model the last evaluation is of (SWA's average, where it is taken)."""
        for name, m in self.taken:
            if overridden(m, "final_model"):
                with self.clock(name):
                    model = m.final_model(model, step)
        return model

    def final(self, model: nn.Module) -> Row:
        """Every measurement's final columns (``final_when_off`` where not taken)."""
        row: Row = {}
        for e in self.entries:
            if e.taken is None:
                row.update(e.kind.final_when_off())
                continue
            with self.clock(e.declared.name):
                row.update(e.taken.final(model))
        return row

    def about(self) -> Row:
        """Every measurement's ``about`` keys (first and last rows)."""
        row: Row = {}
        for e in self.entries:
            row.update(e.kind.about(self.parts))
        return row

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Each built measurement's state, and the seconds so far (every worker calls it)."""
        return {"state": {name: m.state_dict() for name, m in self.taken},
                "seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict, step: int) -> None:
        for name, m in self.taken:
            saved = state["state"].get(name)
            if saved is not None:
                m.load_state_dict(saved, step)
        self.seconds.update(state["seconds"])
