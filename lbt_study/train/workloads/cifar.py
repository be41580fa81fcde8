"""CIFAR-10 (32x32 colour images, 10 classes) from the official python pickle files.

Data: the directory named by the environment variable ``LBT_CIFAR10_DIR`` must hold the
extracted ``cifar-10-python.tar.gz`` (the ``cifar-10-batches-py`` folder): ``data_batch_1`` ...
``data_batch_5`` and ``test_batch``. The tool never downloads: fetch the archive from
https://www.cs.toronto.edu/~kriz/cifar.html yourself and extract it, e.g.

    tar xzf cifar-10-python.tar.gz -C /data && export LBT_CIFAR10_DIR=/data/cifar-10-batches-py

Set the variable wherever trials run: a local Ray started by ``lbt-study run`` inherits the
driver's environment; on a cluster set it on every node before ``ray start`` (and put the
files on a path every node can read).

- train = the five data batches (50,000 images); validation = ``test_batch`` (10,000 images),
  as in Shallue et al. 2018 and most batch-size papers (there is no separate test set here);
- pixels are scaled to [0, 1], then normalised per channel with the CIFAR-10 training-set
  mean and standard deviation (``MEAN``, ``STD``);
- ``LBT_CIFAR10_LIMIT=N`` keeps only the first N training and the first N validation images
  (smoke tests on a laptop);
- augmentation (training micro-batches only, on the training device): random 32x32 crops of
  the image zero-padded by 4 pixels, and horizontal flips with p = 0.5, vectorised over the
  batch. The padding is zero in *normalised* units (the channel mean), since the data are
  normalised once at load time.

Models: ``resnet18`` (the CIFAR variant of ResNet-18: 3x3 stem, no max-pool, 4 stages of 2
BasicBlocks with 64/128/256/512 channels, strides 1/2/2/2, global average pool, linear 10;
11.2M parameters) and ``resnet_tiny`` (widths 8/16/32/64, one block per stage) for CPU tests.
Every normalization comes from ``make_norm`` (feature maps), so all of ``NORMS`` work.

Objective: validation accuracy, target 0.93: a common ResNet-18 CIFAR-10 target
(kuangliu/pytorch-cifar reports 93.0% for ResNet-18 with this augmentation). The target is a
study setting: ``Study(target=...)`` overrides it.

The pickles are read with an unpickler that accepts only the numpy array globals the official
files contain, so a stray or tampered file cannot run code.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lbt_study.errors import UserError
from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.workload import ACCURACY, Data, Workload

DIR_ENV = "LBT_CIFAR10_DIR"
LIMIT_ENV = "LBT_CIFAR10_LIMIT"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
VAL_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
"""Per-channel mean and standard deviation of the 50,000 training images, pixels in [0, 1]."""
PAD = 4
SIZE = 32


def _resolve(module: str, name: str) -> object:
    # The official files (numpy 1.x, Python 2) name numpy.core, which numpy 2 renamed _core.
    if module.startswith("numpy.core"):
        try:
            return getattr(importlib.import_module("numpy._core" + module[10:]), name)
        except ImportError:
            pass
    return getattr(importlib.import_module(module), name)


class _ArrayUnpickler(pickle.Unpickler):
    """Loads dicts of numpy arrays, lists, ints and bytes; refuses every other global.

    ``_codecs.encode`` is how Python 3 writes bytes at protocol 2 (files re-saved by Python 3).
    """

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return _resolve(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3072), int64 labels (N,)) from one official pickle file."""
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a CIFAR-10 python batch file ({exc})") from None
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE or len(data) != len(labels):
        raise UserError(f"{path}: expected data of shape (N, 3072) and N labels, got "
                        f"{data.shape} and {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64)


def data_dir() -> Path:
    """The CIFAR-10 directory from ``LBT_CIFAR10_DIR``, checked to hold all six files."""
    names = ", ".join((*TRAIN_FILES, VAL_FILE))
    howto = "download cifar-10-python.tar.gz yourself and extract it; the tool never downloads"
    value = os.environ.get(DIR_ENV)
    if not value:
        raise UserError(f"set {DIR_ENV} to the directory holding {names}; {howto}")
    path = Path(value).expanduser()
    missing = [n for n in (*TRAIN_FILES, VAL_FILE) if not (path / n).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 directory {path} ({DIR_ENV}) lacks {', '.join(missing)}; "
                        f"expected {names}; {howto}")
    return path


def data_limit() -> int | None:
    """``LBT_CIFAR10_LIMIT`` as a positive int, or None when unset."""
    value = os.environ.get(LIMIT_ENV)
    if not value:
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UserError(f"{LIMIT_ENV} must be a positive integer, got {value!r}")
    return limit


def _images(data: np.ndarray) -> Tensor:
    """uint8 rows of RGB planes -> normalised float32 (N, 3, 32, 32)."""
    x = torch.from_numpy(data).reshape(-1, 3, SIZE, SIZE).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


@functools.lru_cache(maxsize=2)
def _load(directory: Path, limit: int | None) -> Data:
    """Parsed once per process and (directory, limit): every trial reloads its workload."""
    parts, have = [], 0
    for name in TRAIN_FILES:
        if limit is not None and have >= limit:
            break
        parts.append(_read_batch(directory / name))
        have += len(parts[-1][0])
    x_tr = np.concatenate([p[0] for p in parts])[:limit]
    y_tr = np.concatenate([p[1] for p in parts])[:limit]
    x_va, y_va = _read_batch(directory / VAL_FILE)
    x_va, y_va = x_va[:limit], y_va[:limit]
    return Data(_images(x_tr), torch.from_numpy(y_tr), _images(x_va), torch.from_numpy(y_va))


def load_data(seed: int) -> Data:
    """The fixed split: five data batches to train, ``test_batch`` to validate."""
    del seed  # the split is part of the workload, not of the trial
    return _load(data_dir(), data_limit())


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
    """Each image of ``x`` (N, C, H, W) zero-padded by ``PAD``, cropped to H x W at row offset
    ``dy[n]`` and column offset ``dx[n]`` (0 ... 2 * PAD), then mirrored where ``flip[n]``.

    One gather with advanced indexing: no Python loop over images."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    dev = x.device
    rows = dy.view(n, 1) + torch.arange(h, device=dev)  # (N, H)
    j = torch.arange(w, device=dev)
    cols = dx.view(n, 1) + torch.where(flip.view(n, 1), w - 1 - j, j)  # (N, W)
    return padded[
        torch.arange(n, device=dev).view(n, 1, 1, 1),
        torch.arange(c, device=dev).view(1, c, 1, 1),
        rows.view(n, 1, h, 1),
        cols.view(n, 1, 1, w),
    ]


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip (p = 0.5) of a batch."""
    n, dev = len(x), x.device
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    return crop_flip(x, dy, dx, flip)


def _conv3x3(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormSpec) -> None:
        super().__init__()
        bias = norm.kind == "none"  # a bias before a normalization is redundant
        self.conv1 = _conv3x3(c_in, c_out, stride, bias)
        self.norm1 = make_norm(norm, c_out, spatial=True)
        self.conv2 = _conv3x3(c_out, c_out, 1, bias)
        self.norm2 = make_norm(norm, c_out, spatial=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias),
                make_norm(norm, c_out, spatial=True),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet for 32x32 inputs: 3x3 stem, no max-pool, stages of BasicBlocks, average pool."""

    def __init__(
        self, norm: NormSpec, widths: tuple[int, ...], blocks: tuple[int, ...],
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3x3(3, widths[0], 1, norm.kind == "none"),
            make_norm(norm, widths[0], spatial=True),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(c_in, width, stride, norm))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        return self.head(out.mean(dim=(2, 3)))


def resnet18(norm: NormSpec) -> nn.Module:
    return ResNet(norm, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))


def resnet_tiny(norm: NormSpec) -> nn.Module:
    return ResNet(norm, widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1))


WORKLOAD = Workload(
    name="cifar",
    models={"resnet18": resnet18, "resnet_tiny": resnet_tiny},
    load_data=load_data,
    metrics=(ACCURACY,),
    objective="accuracy",
    target=0.93,
    description="CIFAR-10 from $LBT_CIFAR10_DIR, 50,000 train / 10,000 validation (test_batch), "
                "random crop + flip",
    default_model="resnet18",
    augment=augment,
)
