"""scikit-learn's 8x8 digits (1,797 images, 10 classes), shipped with the package.

A fixed, seeded, stratified 80/20 train/validation split; pixels scaled to [0, 1].
Two models, each taking the normalization choice: ``mlp`` (vector features) and ``cnn``
(feature maps; every normalization, instance norm included).
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.workload import Data, Workload

SPLIT_SEED = 0
"""The split is fixed across trials and seeds so that every trial sees the same data."""


def load_data(seed: int) -> Data:
    del seed  # the split is part of the workload, not of the trial
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y
    )

    def images(a: object) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0

    return Data(
        images(x_tr), torch.as_tensor(y_tr), images(x_va), torch.as_tensor(y_va)
    )


def mlp(norm: NormSpec, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        make_norm(norm, hidden, spatial=False),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        make_norm(norm, hidden, spatial=False),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def cnn(norm: NormSpec, width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        make_norm(norm, width, spatial=True),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        make_norm(norm, 2 * width, spatial=True),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 10),
    )


WORKLOAD = Workload(
    name="digits",
    models={"cnn": cnn, "mlp": mlp},
    load_data=load_data,
    objective="accuracy",
    target=0.95,
    description="scikit-learn digits, 8x8 grey images, 10 classes, 1437 train / 360 validation",
)
