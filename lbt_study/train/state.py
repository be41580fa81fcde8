"""What a checkpoint holds: a trial's progress and the state of every stateful part, the
measurements' included."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lbt_study.train.measurements.active import ActiveMeasurements
from lbt_study.train.setup import Parts


@dataclass
class TrainState:
    """A run's progress (steps, clocks, the first loss, step times) over its ``parts`` and
    ``measurements``; ``state_dict`` is everything needed to continue exactly where this step
    left off."""

    parts: Parts = field(repr=False)
    measurements: ActiveMeasurements = field(repr=False)
    step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    first_loss: float = math.nan
    """The first step's minibatch loss, the reference for divergence."""
    step_times: list[float] = field(default_factory=list)
    at_target: int = 0
    """Evaluations in a row whose objective reached the target (``stop_at_target``)."""

    def state_dict(self) -> dict:
        """Every worker calls it (a measurement's state may be averaged over workers)."""
        p = self.parts
        return {
            "step": self.step, "model": p.model.state_dict(),
            "optimizer": p.opt.state_dict(), "scheduler": p.sched.state_dict(),
            "stream": p.stream.state_dict(), "torch_rng": torch.get_rng_state(),
            "measurements": self.measurements.state_dict(),
            "micro": p.schedule.micro_batches(),
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
            "first_loss": self.first_loss,
            "step_times": torch.tensor(self.step_times, dtype=torch.float64),
            "at_target": self.at_target,
        }

    def load_state_dict(self, state: dict) -> None:
        """The micro-batches were restored by ``assemble``; the measurements were built
        before this loads the model's weights (``weight_distance`` keeps the initial ones)."""
        p = self.parts
        self.step = int(state["step"])
        p.model.load_state_dict(state["model"])
        p.opt.load_state_dict(state["optimizer"])
        p.sched.load_state_dict(state["scheduler"])
        p.stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        self.measurements.load_state_dict(state["measurements"], self.step)
        self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
        self.first_loss = float(state["first_loss"])
        self.step_times = state["step_times"].tolist()
        self.at_target = int(state.get("at_target", 0))
