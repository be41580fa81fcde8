"""The gradient noise scale probe of one trial: the meter, where its two batch sizes come
from (``BatchSchedule.gns_batch_sizes``), and its restart at a batch-growth phase."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from lbt_study.batching import BatchPlan, BatchSchedule
from lbt_study.measure import GnsMeter, MicroBatchGradients, gns_comm_hook, gns_unmeasured


class NoiseScaleProbe:
    """Feeds a ``GnsMeter`` from the step: a DDP comm hook (worker-local vs all-reduced
    gradients) or micro-batch gradients under accumulation on one worker."""

    def __init__(self, meter: GnsMeter, micro: MicroBatchGradients | None,
                 schedule: BatchSchedule, data_parallel: bool) -> None:
        self.meter, self.micro = meter, micro
        self.schedule, self.data_parallel = schedule, data_parallel
        self.plan: BatchPlan | None = None

    @classmethod
    def attach(cls, schedule: BatchSchedule, model: nn.Module, ddp: DDP | None, ema: float,
               device: torch.device) -> NoiseScaleProbe | None:
        """The probe for the first step's plan, or None when a step gives one batch size."""
        plan = schedule.plan_at(1)
        sizes = schedule.gns_batch_sizes(plan, ddp is not None)
        if sizes is None:
            return None
        meter = GnsMeter(*sizes, ema, device)
        if ddp is not None:
            ddp.register_comm_hook(None, gns_comm_hook(meter))
            return cls(meter, None, schedule, True)
        micro = MicroBatchGradients(list(model.parameters()), plan.accumulation_steps)
        return cls(meter, micro, schedule, False)

    def use_plan(self, plan: BatchPlan) -> None:
        """At a batch-growth phase the two batch sizes change and the EMAs restart."""
        if plan is self.plan:  # every step calls it: the same phase costs nothing
            return
        self.plan = plan
        sizes = self.schedule.gns_batch_sizes(plan, self.data_parallel)
        if sizes is not None and sizes != (self.meter.small_batch, self.meter.big_batch):
            self.meter.restart(*sizes)

    def start_step(self) -> None:
        if self.micro is not None:
            self.micro.start_step()

    def after_backward(self) -> None:
        if self.micro is not None:
            self.micro.after_backward(self.meter)

    def end_step(self) -> None:
        if self.micro is not None:
            self.micro.end_step(self.meter)
        self.meter.end_step()


def read_noise_scale(probe: NoiseScaleProbe | None) -> dict[str, float]:
    """The noise-scale columns of an evaluation row (NaN where unmeasured)."""
    return probe.meter.read() if probe is not None else gns_unmeasured()
