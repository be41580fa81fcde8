"""The training loop: plain torch + torch.distributed, no Ray.

``run_training(cfg, report)`` runs one trial on one process. Under an initialised process group
(Ray Train, torchrun, or any launcher) it is one data-parallel worker: every worker draws the
same global batch of ``B`` indices, takes its own slice, runs ``accumulation_steps``
micro-batches (``no_sync`` on all but the last) and DDP averages the gradients, so one update
sees exactly ``B`` examples. ``report(row)`` is called on every worker at every evaluation with
identical, all-reduced values.

The pieces, in the order a trial meets them: ``setup`` (data, batch schedule, model with its
norms, GPU placement, memory probe, optimizer and schedule, DDP), ``step`` (one update),
``rows`` (evaluation and the rows a trial reports), ``state`` (what a checkpoint holds),
``loop`` (the steps and evaluations).

On a CUDA device the GPU path turns on by itself (``lbt_study.device.gpu_settings``; every
choice is a ``TrainConfig`` field, and every "auto" is off on CPU, so CPU results do not
change): bf16 autocast for forward, loss and evaluation (weights, gradients and optimizer
state stay float32; no loss scaling is needed for bf16), channels_last for convolutional
models, the data moved to the GPU once when it fits in a quarter of free memory (else pinned
host memory and non-blocking copies), TF32 for float32 matmuls and convolutions, and
optionally ``torch.compile`` (the module is compiled before DDP wraps it; checkpoints hold the
plain module's state, so they load with or without compile).
"""

from lbt_study.batching import eval_steps, micro_batch_candidates
from lbt_study.optim import make_scheduler
from lbt_study.train.loop import Outcome, run_training
from lbt_study.train.rows import Checkpointer, Reporter, Row, evaluate
from lbt_study.train.setup import Cadence, agreed, world
from lbt_study.train.state import TrainState

__all__ = [
    "Cadence",
    "Checkpointer",
    "Outcome",
    "Reporter",
    "Row",
    "TrainState",
    "agreed",
    "eval_steps",
    "evaluate",
    "make_scheduler",
    "micro_batch_candidates",
    "run_training",
    "world",
]
