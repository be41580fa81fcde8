"""Energy of the training steps (columns ``energy_joules``, ``energy_joules_per_example``,
``energy_source``): the hardware counter read before and after every step, so evaluation is
left out, summed over the workers' devices (NVML) or over one worker per host (RAPL counts
the whole package)."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.distributed as dist

from lbt_study.train.batching import BatchPlan
from lbt_study.train.energy import EnergyCounter, open_counter
from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts

FINAL = ("energy_joules", "energy_joules_per_example")


class Energy(Measurement):
    """Joules spent in the training steps, from the device's energy counter."""

    def __init__(self, counter: EnergyCounter, device: torch.device) -> None:
        self.counter, self.device = counter, device
        self.joules, self.examples, self.start = 0.0, 0, math.nan
        self.batch = 0

    @classmethod
    def build(cls, parts: Parts) -> Energy | None:
        counter, _ = open_counter(parts.device)
        return None if counter is None else cls(counter, parts.device)

    @classmethod
    def about(cls, parts: Parts) -> Row:
        return {"energy_source": open_counter(parts.device)[1]}

    @classmethod
    def final_when_off(cls) -> Row:
        return dict.fromkeys(FINAL, math.nan)

    def start_step(self, step: int, plan: BatchPlan) -> None:
        self.start, self.batch = self.counter.read(), plan.global_batch_size

    def after_update(self, step: int) -> None:
        self.joules += self.counter.read() - self.start
        self.examples += self.batch

    def final(self, model: torch.nn.Module) -> Row:
        mine = self.joules
        if self.counter.per_host and int(os.environ.get("LOCAL_RANK", "0")) != 0:
            mine = 0.0  # the package's counter: one worker per host counts it
        total = mine
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([mine], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            total = float(t.item())
        per = total / self.examples if self.examples else math.nan
        return {"energy_joules": total, "energy_joules_per_example": per}

    def state_dict(self) -> Any:
        return {"joules": self.joules, "examples": self.examples}

    def load_state_dict(self, state: Any, step: int) -> None:
        self.joules, self.examples = float(state["joules"]), int(state["examples"])
