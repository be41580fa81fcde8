"""Stochastic weight averaging (column ``swa``): the weights averaged from ``swa_start`` (a
fraction of the steps) on with ``torch.optim.swa_utils``; the final evaluation is of the
averaged model, its normalization statistics recomputed (``update_bn``)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import swa_utils

from lbt_study.train.device import gather
from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts


class WeightAverage(Measurement):
    """The running average of the weights after every step from ``start`` on."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.averaged = swa_utils.AveragedModel(parts.model)
        self.start = math.ceil(parts.cfg.swa_start * parts.schedule.total_steps)
        """First step whose weights enter the average."""

    @classmethod
    def build(cls, parts: Parts) -> WeightAverage | None:
        return cls(parts) if parts.cfg.swa_start else None

    @classmethod
    def final_when_off(cls) -> Row:
        return {"swa": False}

    def after_update(self, step: int) -> None:
        if step >= self.start:
            self.averaged.update_parameters(self.parts.model)

    def final_model(self, model: nn.Module, step: int) -> nn.Module:
        """The average, with batch statistics recomputed over the training set in
        micro-batches of the last step's size."""
        p = self.parts
        micro = p.schedule.plan_at(step).micro_batch_size
        batches = (p.gpu.prepare(gather(p.data.x_train, i, p.device)) for i in
                   torch.arange(len(p.data.x_train)).split(micro))
        swa_utils.update_bn(batches, self.averaged)
        return self.averaged.module

    def final(self, model: nn.Module) -> Row:
        return {"swa": True}

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict, step: int) -> None:
        self.averaged.load_state_dict(state)
