"""How unequal the workers' gradients are (column ``grad_norm_ratio``): under DDP, at the
step before each evaluation, the largest worker-local gradient norm over the smallest (1:
every worker's gradient is as large; it grows as the per-worker batch shrinks, or when the
workers' shards differ). NaN on one worker, at step 0, and at an evaluation whose step was
not planned (the last one of a seconds budget), since only planned steps are measured.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from lbt_study.train.batching import BatchPlan
from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.setup import Parts


class GradNormRatio(Measurement):
    """Reads each worker's accumulated local gradient from the DDP buckets before their
    all-reduce, at the planned evaluation steps only (a squared norm per bucket), and
    all-reduces max and min of the norm at the evaluation."""

    def __init__(self, parts: Parts) -> None:
        self.planned = parts.schedule.eval_steps(parts.cfg)
        self.local_sq = torch.zeros((), dtype=torch.float64, device=parts.device)
        self.step, self.measured_at = 0, -1

    @classmethod
    def build(cls, parts: Parts) -> GradNormRatio | None:
        return cls(parts) if parts.ddp is not None else None

    def start_step(self, step: int, plan: BatchPlan) -> None:
        self.step = step
        if step in self.planned:
            self.local_sq.zero_()

    def local_bucket(self, bucket: dist.GradBucket) -> None:
        if self.step in self.planned:
            self.local_sq += bucket.buffer().double().pow(2).sum()

    def end_step(self) -> None:
        if self.step in self.planned:
            self.measured_at = self.step

    def evaluation(self, model: nn.Module, step: int) -> Row:
        if self.measured_at != step:
            return {"grad_norm_ratio": math.nan}
        norm = self.local_sq.sqrt()
        both = torch.stack([norm, -norm])  # max of -norm is -min
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        high, low = both[0].item(), -both[1].item()
        return {"grad_norm_ratio": high / low if low > 0 else math.nan}
