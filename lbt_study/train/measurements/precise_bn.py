"""Precise BatchNorm statistics at evaluation time (Wu & Johnson 2021, "Rethinking 'Batch' in
BatchNorm"): the running statistics of every batch-statistic norm recomputed over a fixed
training subset before an evaluation, and the training buffers put back after it.

Training keeps an exponential moving average (momentum 0.1) of batch statistics. A run of few
steps at a large batch size ends with a good part of its initial statistics still in that
average (12 steps: 0.9^12 = 28%), so evaluating with it measures the stale buffers, not the
model. Here every such module's running mean and variance become the plain average, over the
subset's micro-batches (of the size training used, so each statistic sees what it saw in
training), of the micro-batch mean and unbiased variance: BatchNorm's own update with
momentum 1/i at the i-th micro-batch. Under SyncBN in a process group each worker takes its
share of the subset and the statistics pool over workers, as in training; otherwise every
worker runs the whole subset and all get the same buffers.

The micro-batches are not run one by one: each norm computes the statistics of every
micro-batch (its ghost batches, for Ghost BN) of a large forward pass in one reshape
(``norms.chunk_normalize``, Ghost BN's own vectorised forward), and the average over them is
the same number. Forward passes hold at most ``GROUP_EXAMPLES`` examples (or one
micro-batch). HybridNorm, which mixes in layer statistics, and SyncBN across workers, whose
statistics pool over workers, keep the micro-batch loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lbt_study.train.device import gather
from lbt_study.train.measurements.contract import Measurement
from lbt_study.train.norms import (
    BATCH_STATISTIC_MODULES,
    GhostBatchNorm,
    SyncBatchNorm,
    chunk_size_of,
    chunked_statistics,
)
from lbt_study.train.sampling import probe_subset
from lbt_study.train.setup import Parts

GROUP_EXAMPLES = 1024
"""The most examples one precise-BN forward pass holds (at least one micro-batch)."""


def batch_stat_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that normalise with batch statistics and keep running estimates."""
    return [m for m in model.modules()
            if isinstance(m, BATCH_STATISTIC_MODULES)
            and getattr(m, "running_mean", None) is not None]


class PreciseBN(Measurement):
    """Recomputes a model's batch statistics on a fixed training subset (see the module)
    around every evaluation of the trial's model (the SWA average has its own, from
    ``update_bn``)."""

    def __init__(self, parts: Parts, subset: Tensor) -> None:
        self.parts, self.subset = parts, subset

    @classmethod
    def build(cls, parts: Parts) -> PreciseBN | None:
        """None when ``precise_bn`` is off or the model has no batch-statistic norm."""
        if not parts.cfg.precise_bn or not batch_stat_modules(parts.model):
            return None
        return cls(parts, probe_subset(len(parts.data.x_train), parts.cfg.precise_bn_examples,
                                       parts.cfg.seed))

    def around_evaluation(self, model: nn.Module,
                          step: int) -> contextlib.AbstractContextManager[None]:
        if model is not self.parts.model:
            return contextlib.nullcontext()
        return self.recomputed(model, self.parts.schedule.plan_at(step).micro_batch_size)

    def chunks(self, model: nn.Module, micro: int) -> list[Tensor]:
        """This worker's micro-batches of the subset (all of equal size)."""
        p, idx = self.parts, self.subset
        if p.size > 1 and any(isinstance(m, SyncBatchNorm | nn.SyncBatchNorm)
                              for m in model.modules()):
            idx = idx[p.rank::p.size]
        size = min(micro, len(idx))
        ghost = [m.ghost_batch_size for m in model.modules() if isinstance(m, GhostBatchNorm)]
        if ghost and size % ghost[0]:  # a subset smaller than the micro-batch
            size = max(size - size % ghost[0], ghost[0])
        count = max(len(idx) // size, 1)
        return list(idx[: count * size].chunk(count))

    @contextlib.contextmanager
    def recomputed(self, model: nn.Module, micro: int) -> Iterator[None]:
        """Within: the model's batch statistics are the subset's; after: as they were."""
        modules = batch_stat_modules(model)
        saved = [({k: v.clone() for k, v in m.named_buffers(recurse=False)}, m.momentum)
                 for m in modules]
        was_training = model.training
        try:
            self._recompute(model, modules, micro)
            yield
        finally:
            for m, (buffers, momentum) in zip(modules, saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
                m.momentum = momentum
            model.train(was_training)

    @torch.no_grad()
    def _recompute(self, model: nn.Module, modules: list[nn.Module], micro: int) -> None:
        p = self.parts
        model.train()
        chunks = self.chunks(model, micro)
        sizes = [chunk_size_of(m, len(chunks[0])) for m in modules]
        pooled = p.size > 1 and any(isinstance(m, SyncBatchNorm | nn.SyncBatchNorm)
                                    for m in modules)
        if None in sizes or pooled:
            self._forward(model, modules, chunks)
            return
        per = max(1, GROUP_EXAMPLES // len(chunks[0]))
        groups = [torch.cat(chunks[i:i + per]) for i in range(0, len(chunks), per)]
        with chunked_statistics(modules, sizes, update=True):
            self._forward(model, modules, groups)

    def _forward(self, model: nn.Module, modules: list[nn.Module], batches: list[Tensor]) -> None:
        """Forward passes of ``batches`` (equal sizes) in train mode, each norm's running
        statistics the average over the passes (momentum 1/i at the i-th)."""
        p = self.parts
        with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):
            for i, idx in enumerate(batches, start=1):
                for m in modules:
                    m.momentum = 1.0 / i  # the running average of the passes' statistics
                with p.gpu.autocast(p.device):
                    model(p.gpu.prepare(gather(p.data.x_train, idx, p.device)))
