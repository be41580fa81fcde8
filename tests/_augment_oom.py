"""A digits workload whose augmentation runs out of memory above 32 examples (the memory
probe must count it: tests/test_faults.py)."""

import dataclasses

import torch

from lbt_study.train.workloads import digits


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if len(x) > 32:
        raise torch.OutOfMemoryError(f"augmenting {len(x)} examples")
    return x


WORKLOAD = dataclasses.replace(digits.WORKLOAD, name="digits_augment_oom", augment=_augment)
