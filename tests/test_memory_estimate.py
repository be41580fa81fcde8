"""The seed-001 memory estimate (issue 23, part 4): known answers on a linear model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lbt_study.train.memory import MemoryEstimate, estimate_memory


def linear_estimate(optimizer: str, momentum: float = 0.9) -> MemoryEstimate:
    torch.manual_seed(0)
    return estimate_memory(nn.Linear(10, 5), optimizer, momentum, torch.randn(9, 10),
                           torch.randn(9, 5), nn.functional.mse_loss)


def test_parameters_gradients_and_optimizer_state_by_optimizer():
    params = (10 * 5 + 5) * 4
    assert linear_estimate("adamw").optimizer_state == 2 * params
    assert linear_estimate("sgd").optimizer_state == params
    assert linear_estimate("sgd", momentum=0.0).optimizer_state == 0
    e = linear_estimate("adamw")
    assert (e.parameters, e.gradients, e.fixed) == (params, params, 4 * params)


def test_activations_are_the_tensors_the_backward_keeps():
    """Linear + MSE keeps per example its input (10 floats), its output and the target
    (5 floats each) for the backward: 80 bytes; the weight is a parameter, not counted."""
    e = linear_estimate("sgd")
    assert e.activations_per_example == 80.0
    assert e.at(100) == e.fixed + 8000
    assert e.largest_micro_batch(e.fixed + 800) == 10
    assert e.largest_micro_batch(e.fixed - 1) == 0


def test_a_one_example_probe_is_refused():
    with pytest.raises(ValueError, match="at least 2 examples"):
        estimate_memory(nn.Linear(2, 1), "sgd", 0.9, torch.randn(1, 2), torch.randn(1, 1),
                        nn.functional.mse_loss)
