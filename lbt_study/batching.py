"""Batch arithmetic, said out loud and checked in one place.

The global batch size ``B`` is split over ``workers`` data-parallel workers and
``accumulation_steps`` micro-batches per worker per optimizer step:

    B = workers * accumulation_steps * micro_batch

Sizes that do not divide are rejected with the numbers shown; a user's batch size is never
rewritten. ``norm_batch_size`` is the number of examples one normalization statistic sees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lbt_study.errors import UserError

BATCH_NORMS = ("batch", "ghost_batch", "sync_batch", "hybrid")
"""Norms whose statistics are taken over the batch dimension."""


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's examples are laid out over workers and micro-batches."""

    global_batch_size: int
    workers: int
    accumulation_steps: int
    micro_batch_size: int
    norm_batch_size: int | None
    """Examples per normalization statistic; None when the norm uses no batch statistics."""

    @property
    def per_worker_batch_size(self) -> int:
        """Examples one worker contributes to one optimizer step."""
        return self.micro_batch_size * self.accumulation_steps

    def describe(self) -> str:
        """One line in the manner of nanoGPT's 'tokens per iteration'."""
        nb = "n/a" if self.norm_batch_size is None else str(self.norm_batch_size)
        return (
            f"B={self.global_batch_size} = {self.workers} workers x "
            f"{self.accumulation_steps} accumulation x {self.micro_batch_size} micro-batch; "
            f"norm batch size {nb}"
        )

    def as_record(self) -> dict[str, int | None]:
        return asdict(self)


def make_batch_plan(
    global_batch_size: int,
    workers: int = 1,
    accumulation_steps: int = 1,
    norm: str = "none",
    ghost_batch_size: int | None = None,
) -> BatchPlan:
    """Check the batch arithmetic and return the plan; raise ``UserError`` if it does not divide."""
    for name, value in (
        ("batch_size", global_batch_size),
        ("workers", workers),
        ("accumulation_steps", accumulation_steps),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    per_step = workers * accumulation_steps
    if global_batch_size % per_step:
        raise UserError(
            f"batch_size {global_batch_size} is not divisible by workers x accumulation_steps "
            f"= {workers} x {accumulation_steps} = {per_step}; choose a batch size that is a "
            f"multiple of {per_step}"
        )
    micro = global_batch_size // per_step
    return BatchPlan(
        global_batch_size=global_batch_size,
        workers=workers,
        accumulation_steps=accumulation_steps,
        micro_batch_size=micro,
        norm_batch_size=_norm_batch_size(norm, micro, workers, ghost_batch_size),
    )


def _norm_batch_size(norm: str, micro: int, workers: int, ghost: int | None) -> int | None:
    if norm == "ghost_batch":
        if ghost is None or ghost < 1:
            raise UserError(f"ghost_batch needs a positive ghost_batch_size, got {ghost!r}")
        if micro % ghost:
            raise UserError(
                f"ghost_batch_size {ghost} does not divide the micro-batch {micro}; "
                f"allowed: a divisor of {micro}"
            )
        return ghost
    if norm == "sync_batch":
        # SyncBatchNorm pools statistics over all workers' micro-batches (not over accumulation).
        return micro * workers
    if norm in ("batch", "hybrid"):
        return micro
    return None
