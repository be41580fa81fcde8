"""Workloads for scripts/gpu_check.py: CIFAR-10's data with one more model, ``oversized``.

``oversized`` is ResNet-18 on inputs upsampled 1024x (32x32 -> 32768x32768): one example's
activations alone take over 100 GB, so no micro-batch fits on any GPU, and a trial of it must
end ``oom`` while the study goes on. Named ``gpu_workloads:CIFAR_PLUS`` (scripts/ on the
PYTHONPATH of the driver, which a local Ray passes to its workers).
"""

from __future__ import annotations

from torch import Tensor, nn

from lbt_study.train.norms import NormSpec
from lbt_study.train.workload import ACCURACY, Workload
from lbt_study.train.workloads import cifar

UPSAMPLE = 1024


class Oversized(nn.Module):
    """ResNet-18 after a 1024x nearest-neighbour upsampling of its input."""

    def __init__(self, norm: NormSpec) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=UPSAMPLE, mode="nearest")
        self.net = cifar.resnet18(norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.up(x))


CIFAR_PLUS = Workload(
    name="cifar_plus",
    models={"resnet18": cifar.resnet18, "resnet_tiny": cifar.resnet_tiny, "oversized": Oversized},
    load_data=cifar.load_data,
    metrics=(ACCURACY,),
    objective="accuracy",
    target=cifar.WORKLOAD.target,
    description="CIFAR-10 data; resnet18, or ResNet-18 on 1024x upsampled inputs (never fits)",
    default_model="resnet18",
    augment=cifar.augment,
)
