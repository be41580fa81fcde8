"""A character-level Transformer language model on Python's own standard library source.

Text that every machine with Python has: the ``.py`` files under
``sysconfig.get_paths()["stdlib"]`` (``site-packages`` and ``dist-packages`` left out), read
as bytes in sorted path order (``sorted()`` of ``pathlib`` paths: component by component) and
concatenated up to ``DEFAULT_CHARS`` = 2,000,000 characters (bytes); ``LBT_CHARLM_CHARS``
changes that. The text, and hence the vocabulary, depend on the Python version: run every
node of a study with the same one.

- vocabulary: the sorted set of byte values in the text, ids 0 ... V-1;
- split: the first 90% of the text trains, the last 10% validates (fixed, never shuffled);
- examples: each part cut into non-overlapping windows of ``T + 1`` = 65 ids; the input is the
  first 64, the target the next 64 (``x`` and ``y`` are int64 (N, 64), ``y[:, :-1] ==
  x[:, 1:]``); a remainder shorter than a window is dropped.

Models: a decoder-only pre-norm Transformer (token and learned position embeddings, causal
self-attention by ``scaled_dot_product_attention(is_causal=True)``, MLP 4x), ``small``
(2 layers, 4 heads, d_model 128) and ``tiny`` (1 layer, d_model 32) for CPU tests.
Normalizations: ``layer`` (LayerNorm over d_model), ``batch`` (BatchNorm per channel over all
batch x time positions) and ``none``; the others normalise across positions within an example
and would let a position see later tokens, so they are refused. Even BatchNorm lets training
statistics mix positions (and examples), a known reason it is rare in Transformers; evaluation
uses running statistics, so validation numbers stay causal. (The batch plan's norm batch size
counts sequences; each BatchNorm statistic sees 64 positions per sequence.)

Loss: cross-entropy over all positions (mean), in nats per character. Metric: token accuracy
(per-sequence mean, summed over the batch). Objective: validation loss (minimised), target
2.0 nats/char (about 2.9 bits/char): ``small`` with LayerNorm passed it within one epoch at
B = 64 (AdamW, lr 3e-3; 1.6 after two epochs), so large batches must work to reach it in a
few epochs. The target is a study setting: ``Study(target=...)`` overrides it.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lbt_study.errors import UserError
from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.workload import Data, Metric, Workload

CHARS_ENV = "LBT_CHARLM_CHARS"
DEFAULT_CHARS = 2_000_000
CONTEXT = 64
"""T: positions per example (the window holds T + 1 ids)."""
TRAIN_FRACTION = 0.9
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
SEQUENCE_NORMS = ("layer", "batch", "none")


def _source_files(directory: Path) -> Iterator[Path]:
    """``.py`` files depth first, entries by name: the order ``sorted()`` gives pathlib paths."""
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not entry.is_symlink():
            if entry.name not in SKIP_DIRS:
                yield from _source_files(entry)
        elif entry.suffix == ".py" and entry.is_file():
            yield entry


def chars_limit() -> int:
    """``LBT_CHARLM_CHARS`` (default ``DEFAULT_CHARS``), checked to leave a validation window."""
    value = os.environ.get(CHARS_ENV)
    if not value:
        return DEFAULT_CHARS
    smallest = round((CONTEXT + 1) / (1 - TRAIN_FRACTION))
    try:
        chars = int(value)
    except ValueError:
        chars = 0
    if chars < smallest:
        raise UserError(f"{CHARS_ENV} must be an integer >= {smallest} (one validation window "
                        f"of {CONTEXT + 1}), got {value!r}")
    return chars


@functools.lru_cache(maxsize=2)
def corpus(root: str, chars: int) -> tuple[bytes, tuple[int, ...]]:
    """(the text, its sorted byte vocabulary), read once per process and (root, chars)."""
    pieces, have = [], 0
    for path in _source_files(Path(root)):
        pieces.append(path.read_bytes())
        have += len(pieces[-1])
        if have >= chars:
            break
    text = b"".join(pieces)[:chars]
    if len(text) < chars:
        raise UserError(f"the standard library at {root} has only {len(text)} characters of "
                        f".py source; set {CHARS_ENV} to at most that")
    return text, tuple(sorted(set(text)))


def _corpus() -> tuple[bytes, tuple[int, ...]]:
    return corpus(sysconfig.get_paths()["stdlib"], chars_limit())


def vocab_size() -> int:
    return len(_corpus()[1])


def windows(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows of T + 1 ids -> (inputs, next-id targets), each (N, T)."""
    n = len(ids) // (CONTEXT + 1)
    w = ids[: n * (CONTEXT + 1)].view(n, CONTEXT + 1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def load_data(seed: int) -> Data:
    """The fixed split: the first 90% of the text trains, the last 10% validates."""
    del seed  # the split is part of the workload, not of the trial
    return _data(sysconfig.get_paths()["stdlib"], chars_limit())


@functools.lru_cache(maxsize=2)
def _data(root: str, chars: int) -> Data:
    text, vocab = corpus(root, chars)
    table = torch.zeros(256, dtype=torch.long)
    table[list(vocab)] = torch.arange(len(vocab))
    ids = table[torch.frombuffer(bytearray(text), dtype=torch.uint8).long()]
    cut = int(TRAIN_FRACTION * len(ids))
    return Data(*windows(ids[:cut]), *windows(ids[cut:]))


class SequenceNorm(nn.Module):
    """A normalization of (N, T, C) activations chosen by the NormSpec (see SEQUENCE_NORMS)."""

    def __init__(self, spec: NormSpec, channels: int) -> None:
        super().__init__()
        if spec.kind not in SEQUENCE_NORMS:
            raise UserError(f"norm {spec.kind!r} is not supported by the charlm workload "
                            f"(it would mix positions); supported: {', '.join(SEQUENCE_NORMS)}")
        self.kind = spec.kind
        # batch: statistics per channel over batch x time, as BatchNorm2d over (N, C, T, 1)
        self.norm = make_norm(spec, channels, spatial=spec.kind == "batch")

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        return self.norm(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"n_head {n_head} does not divide d_model {d_model}")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (N, H, T, C / H)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Block(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, d_model: int, n_head: int, norm: NormSpec) -> None:
        super().__init__()
        self.norm1 = SequenceNorm(norm, d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.norm2 = SequenceNorm(norm, d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """Token ids (N, T) -> next-id logits (N, T, V)."""

    def __init__(
        self, norm: NormSpec, vocab: int, n_layer: int, n_head: int, d_model: int,
        context: int = CONTEXT,
    ) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_head, norm) for _ in range(n_layer)))
        self.norm = SequenceNorm(norm, d_model)
        self.head = nn.Linear(d_model, vocab)
        for m in self.modules():  # GPT-2's initialisation
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} exceeds the context of {self.context}")
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        return self.head(self.norm(self.blocks(x)))


def small(norm: NormSpec) -> nn.Module:
    return CharTransformer(norm, vocab_size(), n_layer=2, n_head=4, d_model=128)


def tiny(norm: NormSpec) -> nn.Module:
    return CharTransformer(norm, vocab_size(), n_layer=1, n_head=4, d_model=32)


def sequence_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all N x T positions, in nats."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def token_accuracy_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sequence fraction of correctly predicted next ids, summed over the batch."""
    return (logits.argmax(dim=-1) == targets).float().mean(dim=1).sum()


TOKEN_ACCURACY = Metric("accuracy", token_accuracy_sum, "maximize")

WORKLOAD = Workload(
    name="charlm",
    models={"small": small, "tiny": tiny},
    load_data=load_data,
    loss=sequence_cross_entropy,
    metrics=(TOKEN_ACCURACY,),
    objective="loss",
    target=2.0,
    description="character-level LM on the Python standard library's .py source, "
                "64-character windows, 90/10 split",
    default_model="small",
)
