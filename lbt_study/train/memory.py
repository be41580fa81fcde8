"""What a training step should need in memory (the seed-001 estimate) and the largest
micro-batch that fits a given memory.

estimate = parameters + gradients + optimizer state + activations x micro-batch: parameter
and gradient bytes from the model, the optimizer's state as a multiple of the parameters
(SGD with momentum and LARS one buffer, Adam-family two, plain SGD none), and the bytes the
forward pass saves for the backward per example, counted exactly with
``torch.autograd.graph.saved_tensors_hooks`` over one forward pass of a probe batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

STATE_BUFFERS = {"sgd": 1, "lars": 1, "adamw": 2, "lamb": 2}
"""Optimizer state tensors per parameter (SGD: its momentum buffer; none without momentum)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step: fixed (parameters, gradients, optimizer state) and per
    example (activations saved for the backward)."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations_per_example: float

    @property
    def fixed(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state

    def at(self, micro_batch: int) -> float:
        """The estimate for one micro-batch of ``micro_batch`` examples."""
        return self.fixed + self.activations_per_example * micro_batch

    def largest_micro_batch(self, memory_bytes: float) -> int:
        """The largest micro-batch whose estimate fits ``memory_bytes`` (0: none fits)."""
        room = memory_bytes - self.fixed
        if room <= 0 or self.activations_per_example <= 0:
            return 0
        return int(math.floor(room / self.activations_per_example))


def saved_bytes(model: nn.Module, x: Tensor, loss_fn, y: Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward in one forward pass and loss
    (each storage counted once: views of one tensor share it)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model(x), y)
    return sum(n for ptr, n in seen.items() if ptr not in params)


def estimate_memory(model: nn.Module, optimizer: str, momentum: float, x: Tensor, y: Tensor,
                    loss_fn) -> MemoryEstimate:
    """The estimate for ``model`` trained by ``optimizer``; activations per example from a
    forward pass of the probe batch ``x`` (at least 2 examples, in training mode)."""
    if len(x) < 2:
        raise ValueError(f"the probe batch needs at least 2 examples, got {len(x)}")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters()
                      if p.requires_grad)
    buffers = STATE_BUFFERS.get(optimizer, 2)
    if optimizer == "sgd" and momentum == 0:
        buffers = 0
    model.train()
    one = saved_bytes(model, x[:1].clone(), loss_fn, y[:1].clone())  # clones: own storage
    per_example = saved_bytes(model, x, loss_fn, y) - one
    return MemoryEstimate(param_bytes, param_bytes, buffers * param_bytes,
                          per_example / (len(x) - 1))
