"""A template workload: copy this file, replace the data and the model, name it in a spec.

    study = Study(name="mine", workload="my_package.my_workload:WORKLOAD", space=space)

(``my_package`` must be importable by the driver and by every Ray worker: install it, or put
it on PYTHONPATH on every node.) A workload provides:

1. ``load_data(seed) -> Data``: train and validation tensors held in memory. Keep the split
   fixed (do not derive it from ``seed``) so that every trial sees the same data. Inputs may
   be float (cast to the trial's dtype) or integer (token ids, left as they are).
2. ``models``: named factories taking a ``NormSpec``; put ``make_norm(norm, channels,
   spatial=...)`` where a normalization layer goes, so a study can search over all of them.
3. ``loss``: the training loss, mean over the batch (default: cross-entropy).
4. ``metrics``: per-example metrics, each returning the *sum* over a batch, with a declared
   direction (loss is always measured too). ``objective`` names the one the search optimises
   on the validation set; ``target`` is a threshold on it (optional).
"""

from __future__ import annotations

import torch
from torch import nn

from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.workload import ACCURACY, Data, Workload

N_TRAIN, N_VAL, FEATURES, CLASSES = 2048, 512, 16, 4


def load_data(seed: int) -> Data:
    """Gaussian blobs: one centre per class, generated with a fixed generator."""
    del seed  # the data set is fixed; the trial seed only sets initialisation and order
    gen = torch.Generator().manual_seed(1234)
    centres = 2.0 * torch.randn(CLASSES, FEATURES, generator=gen)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(CLASSES, (n,), generator=gen)
        return centres[y] + torch.randn(n, FEATURES, generator=gen), y

    x_tr, y_tr = sample(N_TRAIN)
    x_va, y_va = sample(N_VAL)
    return Data(x_tr, y_tr, x_va, y_va)


def mlp(norm: NormSpec, hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, hidden),
        make_norm(norm, hidden, spatial=False),
        nn.ReLU(),
        nn.Linear(hidden, CLASSES),
    )


WORKLOAD = Workload(
    name="template-blobs",
    models={"mlp": mlp},
    load_data=load_data,
    loss=nn.functional.cross_entropy,
    metrics=(ACCURACY,),
    objective="accuracy",
    target=0.9,
    description="a template: Gaussian blobs, 4 classes, 16 features",
)
