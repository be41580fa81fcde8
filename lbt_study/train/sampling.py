"""The order in which training examples are drawn, one global batch per optimizer step.

Every worker builds the same stream from the same seed, draws the same global batch of ``B``
indices and takes its own slice of it; the stream's state is saved in checkpoints so that a
restarted run draws exactly what an uninterrupted one would.

- ``IndexStream``: seeded permutations laid end to end (sampling without replacement that
  crosses epoch boundaries, so examples seen = steps x B at every batch size).
- ``StratifiedStream``: every global batch holds a fixed share of each class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lbt_study.errors import UserError
from lbt_study.train.config import TrainConfig


class IndexStream:
    """Training indices without replacement: seeded permutations laid end to end.

    Every step takes exactly ``B`` indices, crossing epoch boundaries where needed, so that
    ``examples seen = steps x B`` for every batch size. Workers built with the same seed
    draw the same global batches.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self._gen = torch.Generator().manual_seed(seed)
        self._buffer = torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> Tensor:
        while len(self._buffer) < k:
            self._buffer = torch.cat([self._buffer, torch.randperm(self.n, generator=self._gen)])
        out, self._buffer = self._buffer[:k], self._buffer[k:]
        return out

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self._gen.get_state(), "buffer": self._buffer.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._gen.set_state(state["generator"])
        self._buffer = state["buffer"].clone()


def stratified_shares(counts: list[int], k: int) -> list[int]:
    """Examples of each class in a batch of ``k``, for classes with ``counts`` examples.

    Largest remainders (Hamilton): class c gets floor(q_c) or ceil(q_c) of its quota
    q_c = k * n_c / N, the leftover seats going to the largest remainders (ties: the rarer
    class, then the lower class index); the shares sum to ``k``. When ``k`` is at least the
    number of classes, every class left with 0 then takes one seat from the class holding the
    most (rarest first; ties: the more frequent donor, then the lower index), so every class
    has at least one example per batch; a donor gives at most one seat per class topped up,
    and every other class stays within one of its quota. Below that, classes may get 0
    (the trainer refuses stratify with B smaller than the number of classes).
    """
    n = sum(counts)
    shares = [k * c // n for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-(k * counts[i] % n), counts[i], i))
    for i in order[: k - sum(shares)]:
        shares[i] += 1
    if k >= len(counts):
        for i in sorted(range(len(counts)), key=lambda i: (counts[i], i)):
            if shares[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (shares[j], counts[j], -j))
                shares[donor] -= 1
                shares[i] += 1
    return shares


class StratifiedStream:
    """Training indices in stratified global batches (``TrainConfig.stratify``).

    Every batch of ``k`` holds exactly ``stratified_shares(counts, k)[c]`` examples of class c
    (classes in sorted label order), drawn without replacement from seeded per-class
    permutations laid end to end (one pass over a class's examples before any repeats), then
    shuffled within the batch so each worker's slice and each micro-batch is a random mix;
    only the global batch has the exact shares. A class whose share exceeds its quota (a rare
    class rounded or topped up) starts its next pass sooner than the data's epoch. Like
    ``IndexStream``: same seed, same batches on every worker; ``examples seen = steps x B``.
    """

    def __init__(self, labels: Tensor, seed: int) -> None:
        classes, counts = torch.unique(labels.cpu(), return_counts=True)
        self.classes, self.counts = classes, counts.tolist()
        self.members = [torch.nonzero(labels.cpu() == c).flatten() for c in classes]
        self._gen = torch.Generator().manual_seed(seed)
        self._buffers = [torch.empty(0, dtype=torch.long) for _ in self.members]
        self._shares: dict[int, list[int]] = {}

    def shares(self, k: int) -> list[int]:
        if k not in self._shares:
            self._shares[k] = stratified_shares(self.counts, k)
        return self._shares[k]

    def take(self, k: int) -> Tensor:
        parts = [self._from_class(c, s) for c, s in enumerate(self.shares(k))]
        return torch.cat(parts)[torch.randperm(k, generator=self._gen)]

    def _from_class(self, c: int, k: int) -> Tensor:
        members, buffer = self.members[c], self._buffers[c]
        while len(buffer) < k:
            buffer = torch.cat([buffer, members[torch.randperm(len(members), generator=self._gen)]])
        out, self._buffers[c] = buffer[:k], buffer[k:]
        return out

    def state_dict(self) -> dict[str, Tensor | list[Tensor]]:
        return {"generator": self._gen.get_state(), "buffers": [b.clone() for b in self._buffers]}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["generator"])
        self._buffers = [b.clone() for b in state["buffers"]]


def make_stream(cfg: TrainConfig, labels: Tensor, smallest_batch: int,
                workload: str) -> IndexStream | StratifiedStream:
    """The run's index stream: stratified when asked (integer class labels, B >= classes)."""
    if not cfg.stratify:
        return IndexStream(len(labels), cfg.seed)
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise UserError(f"stratify needs integer class labels, one per example; workload "
                        f"{workload!r} has {str(labels.dtype).removeprefix('torch.')} labels of "
                        f"shape {tuple(labels.shape)}")
    stream = StratifiedStream(labels, cfg.seed)
    if smallest_batch < len(stream.counts):
        raise UserError(f"stratify needs a batch size of at least the number of classes "
                        f"({len(stream.counts)}), got B={smallest_batch}")
    return stream


def probe_subset(train_examples: int, examples: int, seed: int) -> Tensor:
    """Indices of a fixed training subset for the probe (and precise BN): the first
    ``examples`` (capped at the training set) of a permutation seeded by ``seed + 2`` (the
    train-evaluation subset uses ``seed + 1``), the same at every evaluation and on every
    worker."""
    gen = torch.Generator().manual_seed(seed + 2)
    return torch.randperm(train_examples, generator=gen)[: min(examples, train_examples)]
