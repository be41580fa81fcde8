"""One trial process: the training loop: plain torch + torch.distributed, no Ray.

``run_training(cfg, report)`` runs one trial on one process. Under an initialised process group
(Ray Train, torchrun, or any launcher) it is one data-parallel worker: every worker draws the
same global batch of ``B`` indices, takes its own slice, runs ``accumulation_steps``
micro-batches (``no_sync`` on all but the last) and DDP averages the gradients, so one update
sees exactly ``B`` examples. ``report(row)`` is called on every worker at every evaluation with
identical, all-reduced values.

The pieces, in the order a trial meets them: ``setup`` (data, batch schedule, model with its
norms, GPU placement, memory probe, optimizer and schedule, DDP), ``measurements`` (the
registry of what a trial measures, one module each, behind one contract), ``step`` (one
update), ``rows`` (evaluation and the rows a trial reports), ``state`` (what a checkpoint
holds), ``loop`` (the steps and evaluations).

On a CUDA device the GPU path turns on by itself (``lbt_study.train.device.gpu_settings``; every
choice is a ``TrainConfig`` field, and every "auto" is off on CPU, so CPU results do not
change): bf16 autocast for forward, loss and evaluation (weights, gradients and optimizer
state stay float32; no loss scaling is needed for bf16), channels_last for convolutional
models, the data moved to the GPU once when it fits in a quarter of free memory (else pinned
host memory and non-blocking copies), TF32 for float32 matmuls and convolutions, and
optionally ``torch.compile`` (the module is compiled before DDP wraps it; checkpoints hold the
plain module's state, so they load with or without compile).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "eval_steps": "lbt_study.train.batching", "micro_batch_candidates": "lbt_study.train.batching",
    "make_scheduler": "lbt_study.train.optim",
    "Outcome": "lbt_study.train.loop", "run_training": "lbt_study.train.loop",
    "Checkpointer": "lbt_study.train.rows", "Reporter": "lbt_study.train.rows",
    "Row": "lbt_study.train.rows", "evaluate": "lbt_study.train.rows",
    "Cadence": "lbt_study.train.setup", "agreed": "lbt_study.train.setup",
    "world": "lbt_study.train.setup", "TrainState": "lbt_study.train.state",
}
"""Imported when first used, so that ``lbt_study.train.config`` loads without torch."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lbt_study.train' has no attribute {name!r}")
