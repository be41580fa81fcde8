"""One optimizer update over B examples, and its timing."""

from __future__ import annotations

import contextlib
import time

import torch
import torch.distributed as dist
from torch import Tensor

from lbt_study.train.batching import BatchPlan
from lbt_study.train.measurements.active import ActiveMeasurements
from lbt_study.train.setup import Parts


def train_step(parts: Parts, plan: BatchPlan, step: int,
               measurements: ActiveMeasurements) -> Tensor:
    """Every worker draws the same global batch, takes its slice and runs
    ``accumulation_steps`` micro-batches (``no_sync`` on all but the last), so DDP averages
    gradients over exactly B examples, calling the measurements' step hooks. Returns this
    worker's mean minibatch loss (float64 over several micro-batches). One micro-batch, the
    common case, costs no extra ops."""
    ddp = parts.ddp
    idx = parts.stream.take(plan.global_batch_size)
    mine = idx if parts.size == 1 else parts.schedule.worker_slice(idx, parts.rank, plan)
    if not parts.model.training:  # evaluation puts the whole model in eval mode
        parts.model.train()
    parts.opt.zero_grad(set_to_none=True)
    micro_batches = mine.split(plan.micro_batch_size) if plan.accumulation_steps > 1 \
        else (mine,)
    measurements.start_step(step, plan)
    losses = []
    for j, part in enumerate(micro_batches):
        sync = ddp is None or j == len(micro_batches) - 1
        xb, yb = _micro_batch(parts, part, step, j)
        with contextlib.nullcontext() if sync else ddp.no_sync():
            loss = parts.forward_loss(parts.net, xb, yb)
            (loss if len(micro_batches) == 1 else loss / len(micro_batches)).backward()
        measurements.after_backward()
        losses.append(loss.detach())
    measurements.end_step()
    parts.opt.step()
    parts.sched.step()
    return losses[0] if len(losses) == 1 else torch.stack(losses).double().mean()


def _micro_batch(parts: Parts, idx: Tensor, step: int, j: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets of micro-batch ``j`` of ``step``, augmented if the workload is."""
    xb, yb = parts.batch(idx)
    if parts.workload.augment is not None:
        gen = _augment_generator(parts, hash((parts.cfg.seed, parts.rank, step, j)))
        xb = parts.gpu.prepare(parts.workload.augment(xb, gen))
    return xb, yb


def _augment_generator(parts: Parts, seed: int) -> torch.Generator:
    """Augmentation randomness per worker, step and micro-batch, from the seed alone (so a
    run restarted from a checkpoint draws the same crops and flips as an uninterrupted one)."""
    return torch.Generator(device=parts.device).manual_seed(seed)


def mean_over_workers(parts: Parts, local_mean: Tensor) -> float:
    """The step's minibatch loss averaged over workers (NaN if any worker's is not finite)."""
    if parts.size == 1:
        return local_mean.item()
    local_mean = local_mean.double()
    pair = torch.stack([local_mean, torch.ones_like(local_mean)])
    dist.all_reduce(pair)
    return (pair[0] / pair[1]).item()


def timed_step(parts: Parts, plan: BatchPlan, step: int,
               measurements: ActiveMeasurements) -> tuple[float, float]:
    """(mean minibatch loss over workers, seconds) of step ``step``, device synchronised."""
    _sync(parts.device)
    t0 = time.perf_counter()
    mean_loss = mean_over_workers(parts, train_step(parts, plan, step, measurements))
    _sync(parts.device)
    return mean_loss, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
