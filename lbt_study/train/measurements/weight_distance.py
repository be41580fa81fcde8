"""The distance travelled from initialisation (column ``weight_distance``): ||w - w_0||,
which Hoffer et al. 2017 find grows like log(steps), slower at a larger batch size.

The smallest complete measurement: ``build`` keeps what it needs from the trial's parts,
``evaluation`` returns its declared column.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts


class WeightDistance(Measurement):
    """||w - w_0|| at every evaluation, w_0 the parameters at initialisation (seeded, so a
    resumed trial has the same ones: ``build`` runs before a checkpoint's weights are
    loaded; a branch measures from its own initialisation, as before it loads the base
    run's weights)."""

    def __init__(self, initial: list[torch.Tensor], device: torch.device) -> None:
        self.initial, self.device = initial, device

    @classmethod
    def build(cls, parts: Parts) -> WeightDistance:
        return cls([p.detach().clone() for p in parts.model.parameters()], parts.device)

    def evaluation(self, model: nn.Module, step: int) -> Row:
        """The Euclidean distance of ``model``'s parameters from initialisation."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for now, start in zip(model.parameters(), self.initial, strict=True):
            total += (now.detach().double() - start.double()).pow(2).sum()
        return {"weight_distance": math.sqrt(total.item())}
