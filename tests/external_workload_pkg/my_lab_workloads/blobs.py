"""A workload defined outside lbt_study, as a user writes one (copied from the template).

Overlapping Gaussian blobs in 5 classes, an MLP, and a metric of its own besides accuracy:
top-2 accuracy, which is also the objective. Named in a study as
``my_lab_workloads.blobs:WORKLOAD``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.workload import ACCURACY, Data, Metric, Workload

N_TRAIN, N_VAL, FEATURES, CLASSES = 1024, 256, 8, 5


def load_data(seed: int) -> Data:
    """A fixed split (the trial seed only sets initialisation and data order)."""
    del seed
    gen = torch.Generator().manual_seed(7)
    centres = 1.2 * torch.randn(CLASSES, FEATURES, generator=gen)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(CLASSES, (n,), generator=gen)
        return centres[y] + torch.randn(n, FEATURES, generator=gen), y

    return Data(*sample(N_TRAIN), *sample(N_VAL))


def top2_count(outputs: Tensor, targets: Tensor) -> Tensor:
    """Examples whose label is among the two highest-scoring classes (a batch sum)."""
    return (outputs.topk(2, dim=1).indices == targets.unsqueeze(1)).any(dim=1).sum()


def mlp(norm: NormSpec) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 32), make_norm(norm, 32, spatial=False), nn.ReLU(),
                         nn.Linear(32, CLASSES))


WORKLOAD = Workload(
    name="lab-blobs",
    models={"mlp": mlp},
    load_data=load_data,
    metrics=(ACCURACY, Metric("top2_accuracy", top2_count, "maximize")),
    objective="top2_accuracy",
    target=0.8,
    description="overlapping Gaussian blobs, 5 classes; objective: top-2 accuracy",
)
