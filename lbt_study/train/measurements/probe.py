"""The evaluation-time gradient noise probe (columns ``gns_probe``, ``gns_probe_se``):
B_simple measured at every evaluation from per-example (or norm-batch chunk) gradients of a
fixed training subset, in every trial, with a jackknife standard error (``GradientNoiseProbe``).
"""

from __future__ import annotations

import contextlib
import math
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from lbt_study.train.batching import BatchSchedule, geometric_eval_steps
from lbt_study.train.config import CONFIRM
from lbt_study.train.device import gather, world
from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.norms import (
    BATCH_STATISTIC_MODULES,
    SyncBatchNorm,
    chunk_size_of,
    chunked_statistics,
)
from lbt_study.train.sampling import probe_subset
from lbt_study.train.setup import Parts

PROBE_GROUPS = 16
"""Groups of the delete-one-group jackknife (fewer when there are fewer samples)."""
GROUP_BYTES = 2**30
"""Bound on the stored group sums (one float64 vector of all trainable parameters per group
a worker holds): a model too large for 16 of them gets fewer groups (at least 2)."""
PER_EXAMPLE_ELEMENTS = 2**24
"""Per-example gradient elements held at once (64 MiB in float32): the vmap chunk."""

LossFn = Callable[[Tensor, Tensor], Tensor]


def sampled_noise(samples: float, sq_sum: float, sum_sq: float, size: int,
                  population: int) -> tuple[float, float]:
    """(|G|^2, tr(S)) from m = ``samples`` gradient samples h_j, each the gradient of the
    mean loss over ``size`` examples, the m * size examples drawn without replacement from
    ``population``: ``sq_sum`` = sum_j |h_j|^2, ``sum_sq`` = |sum_j h_j|^2 (formulas in
    ``GradientNoiseProbe``). NaN for fewer than 2 samples."""
    m = samples
    if m < 2:
        return math.nan, math.nan
    n = m * size
    var = size * (sq_sum - sum_sq / m) / (m - 1)  # s^2: unbiased for S^2 (divisor N - 1)
    trace = (1.0 - 1.0 / population) * var
    grad_sq = sum_sq / m**2 - (1.0 - n / population) * var / n
    return grad_sq, trace


def _ratio(grad_sq: float, trace: float) -> float:
    return trace / grad_sq if grad_sq != 0 else math.nan


def jackknife_se(left_out: list[tuple[float, float]], grad_sq: float, trace: float,
                 share: float, size: int) -> float:
    """The standard error of B = tr(S) / |G|^2 from the delete-one-group values (|G|^2,
    tr(S)) of K groups, ``share`` = n / N of the training set measured.

    Per-example samples (``size`` 1): sqrt((1 - n/N) (K-1)/K sum_k (B_(-k) - mean)^2), the
    jackknife with the finite-population correction (0 when the whole training set is
    measured: nothing is sampled). Chunks of ``size`` b: their partition stays random even
    at n = N, so the correction differs between the two parts of B. The jackknife is taken
    of its linearisation, dB_k = sqrt(c_T) dT_k / |G|^2 - sqrt(c_G) tr(S) dG_k / |G|^4 (dT_k,
    dG_k the groups' deviations of tr(S) and |G|^2), with c_G = 1 - n/N for the subset's mean
    gradient and c_T = 1 - n/(N b) for the spread of chunk means (the share of its variance
    that comes from which examples were drawn is about 1/b). On planted gradients with
    n/N = 0.71 this matches the spread of B over resampled subsets within 5% for b = 8 to 64
    (tests/test_noise_probe_se.py), where the plain jackknife is 1.2 to 1.5x too large and the
    full correction sqrt(1 - n/N) 0.65 to 0.9x too small; near n = N with chunks of 2 to 16 it
    stays 1.1 to 1.4x too large (conservative). NaN for fewer than 2 groups or a group
    without a finite value."""
    groups = len(left_out)
    values = [_ratio(*g) for g in left_out]
    if groups < 2 or not all(math.isfinite(b) for b in values):
        return math.nan
    fpc = max(1.0 - share, 0.0)
    if size == 1:
        mean = sum(values) / groups
        return math.sqrt(fpc * (groups - 1) / groups * sum((b - mean) ** 2 for b in values))
    keep = max(1.0 - share / size, 0.0)
    g_mean = sum(g for g, _ in left_out) / groups
    t_mean = sum(t for _, t in left_out) / groups
    spread = sum((math.sqrt(keep) * (t - t_mean) / grad_sq
                  - math.sqrt(fpc) * trace * (g - g_mean) / grad_sq**2) ** 2
                 for g, t in left_out)
    return math.sqrt((groups - 1) / groups * spread) if grad_sq != 0 else math.nan


@dataclass(frozen=True)
class GroupStats:
    """Sums over the probe's samples, per jackknife group k (all workers' together)."""

    counts: list[float]
    sq_sums: list[float]
    """sum_j |h_j|^2 over group k."""
    self_sq: list[float]
    """|s_k|^2, s_k = sum_j h_j over group k."""
    dots: list[float]
    """s_k . S, S = sum_k s_k."""
    total_sq: float
    """|S|^2."""

    def total(self) -> tuple[float, float, float]:
        return sum(self.counts), sum(self.sq_sums), self.total_sq

    def without(self, k: int) -> tuple[float, float, float]:
        """(samples, sum |h_j|^2, |sum h_j|^2) of every group but k."""
        samples, sq_sum, sum_sq = self.total()
        return (samples - self.counts[k], sq_sum - self.sq_sums[k],
                sum_sq - 2 * self.dots[k] + self.self_sq[k])


@dataclass(frozen=True)
class NoiseEstimate:
    """One probe measurement: B_simple = tr(S) / |G|^2 in examples, its jackknife standard
    error, the two estimates, examples used, examples per gradient sample, groups."""

    b_simple: float
    se: float
    trace_sigma: float
    grad_sq: float
    examples: int
    sample_size: int
    groups: int

    @classmethod
    def of(cls, stats: GroupStats, size: int, population: int) -> NoiseEstimate:
        """The estimate and its delete-one-group jackknife standard error, with the finite-
        population correction of a subset of n of the N training examples drawn without
        replacement (``jackknife_se``)."""
        samples, _, _ = stats.total()
        grad_sq, trace = sampled_noise(*stats.total(), size, population)
        groups = len(stats.counts)
        left_out = [sampled_noise(*stats.without(k), size, population) for k in range(groups)]
        se = jackknife_se(left_out, grad_sq, trace, samples * size / population, size)
        return cls(_ratio(grad_sq, trace), se, trace, grad_sq, int(samples) * size, size,
                   groups)

    def columns(self) -> dict[str, float]:
        return {"gns_probe": self.b_simple, "gns_probe_se": self.se}


class GroupSums:
    """This worker's sums over the gradient samples of the groups it owns: s_k = sum_j h_j
    (float64), sum_j |h_j|^2 and the count; ``reduce`` all-reduces them into
    ``GroupStats``."""

    def __init__(self, owned: list[int], groups: int, numel: int,
                 device: torch.device) -> None:
        self.owned = torch.tensor(owned, dtype=torch.long, device=device)
        self.vectors = torch.zeros(len(owned), numel, dtype=torch.float64, device=device)
        self.scalars = torch.zeros(3, groups, dtype=torch.float64, device=device)

    def add(self, rows: Tensor, grads: list[Tensor]) -> None:
        """Samples' gradients, one [samples, numel] block per parameter (in parameter
        order); ``rows``: each sample's group as an index into ``owned``. Groups are summed
        with index_add in the gradients' dtype (a chunk's share), then in float64."""
        sq = torch.zeros(len(rows), dtype=torch.float64, device=rows.device)
        offset = 0
        for g in grads:
            part = torch.zeros(len(self.owned), g.shape[1], dtype=g.dtype, device=g.device)
            self.vectors[:, offset:offset + g.shape[1]] += part.index_add_(0, rows, g).double()
            sq += torch.linalg.vector_norm(g, dim=1).double().pow(2)
            offset += g.shape[1]
        groups = self.owned[rows]
        self.scalars[0].index_add_(0, groups, torch.ones_like(sq))
        self.scalars[1].index_add_(0, groups, sq)

    def reduce(self) -> GroupStats:
        """Two all-reduces (float64) in a process group: S with the per-group scalars, then
        the dot products s_k . S; every worker gets the same stats."""
        total = self.vectors.sum(0)
        self.scalars[2, self.owned] = torch.linalg.vecdot(self.vectors, self.vectors)
        packed = torch.cat([total, self.scalars.flatten()])
        _, size = world()
        if size > 1:
            dist.all_reduce(packed)
        numel = len(total)
        total, scalars = packed[:numel], packed[numel:].view(3, -1)
        dots = torch.zeros(scalars.shape[1], dtype=torch.float64, device=total.device)
        dots[self.owned] = self.vectors @ total
        if size > 1:
            dist.all_reduce(dots)
        counts, sq_sums, self_sq = scalars.tolist()
        return GroupStats(counts, sq_sums, self_sq, dots.tolist(), float(total @ total))


@contextlib.contextmanager
def probe_mode(model: nn.Module, batch_statistics: bool) -> Iterator[None]:
    """The model in eval mode (no dropout) for the probe; with ``batch_statistics``, the
    batch-statistic norms in train mode, each forward normalised by its own batch, SyncBN
    without its cross-worker reduction (ordinary BatchNorm over this worker's chunk). Modes
    and buffers (running statistics, batch counts) are put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.clone()) for b in model.buffers()]
    local = []
    try:
        model.eval()
        if batch_statistics:
            for m in model.modules():
                if isinstance(m, BATCH_STATISTIC_MODULES):
                    m.train()
                if isinstance(m, SyncBatchNorm | nn.SyncBatchNorm):
                    m.forward = types.MethodType(_BatchNorm.forward, m)
                    local.append(m)
        yield
    finally:
        for m in local:
            m.__dict__.pop("forward", None)
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def per_example_grads(model: nn.Module, loss: LossFn, x: Tensor,
                      y: Tensor) -> Iterator[tuple[slice, list[Tensor]]]:
    """(examples, [per-example gradients of each parameter, [c, numel]]) over chunks of
    (x, y): torch.func (vmap of grad of a functional_call on one example), at most
    ``PER_EXAMPLE_ELEMENTS`` gradient elements at once."""
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    numel = sum(p.numel() for p in params.values())

    def example_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return loss(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    grads_of = vmap(grad(example_loss), in_dims=(None, 0, 0))
    chunk = max(1, PER_EXAMPLE_ELEMENTS // max(numel, 1))
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        grads = grads_of(params, x[part], y[part]).values()
        yield part, [g.reshape(len(x[part]), -1) for g in grads]


def chunk_grads(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor,
                size: int) -> Iterator[tuple[slice, list[Tensor]]]:
    """(chunks, [h_j of each parameter, [c, numel]]) for consecutive chunks of ``size``
    examples of (x, y): h_j the gradient of the chunk's mean loss, each chunk normalised by
    its own statistics. torch.func (vmap over the chunks of grad of a functional_call, each
    norm standing in by ``norms.chunk_normalize`` without writing its buffers), at most
    ``PER_EXAMPLE_ELEMENTS`` gradient elements at once; a norm it cannot stand in for
    (HybridNorm) takes one ``torch.autograd.grad`` per chunk instead."""
    norms = [m for m in model.modules() if isinstance(m, BATCH_STATISTIC_MODULES)]
    if any(chunk_size_of(m, size) is None for m in norms):
        yield from _chunk_grads_one_by_one(model, loss, x, y, size)
        return
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    numel = sum(p.numel() for p in params.values())

    def chunk_loss(p: dict[str, Tensor], xc: Tensor, yc: Tensor) -> Tensor:
        return loss(functional_call(model, p, (xc,)), yc)

    grads_of = vmap(grad(chunk_loss), in_dims=(None, 0, 0))
    m = len(x) // size
    xs = x[: m * size].reshape(m, size, *x.shape[1:])
    ys = y[: m * size].reshape(m, size, *y.shape[1:])
    at_once = max(1, PER_EXAMPLE_ELEMENTS // max(numel, 1))
    with chunked_statistics(norms, [size] * len(norms), update=False):
        for start in range(0, m, at_once):
            part = slice(start, min(start + at_once, m))
            grads = grads_of(params, xs[part], ys[part]).values()
            yield part, [g.reshape(part.stop - part.start, -1) for g in grads]


def _chunk_grads_one_by_one(model: nn.Module, loss: LossFn, x: Tensor, y: Tensor,
                            size: int) -> Iterator[tuple[slice, list[Tensor]]]:
    params = [p for p in model.parameters() if p.requires_grad]
    for j, start in enumerate(range(0, len(x), size)):
        xc, yc = x[start:start + size], y[start:start + size]
        grads = torch.autograd.grad(loss(model(xc), yc), params, allow_unused=True)
        yield slice(j, j + 1), [(torch.zeros_like(p) if g is None else g).reshape(1, -1)
                                for p, g in zip(params, grads, strict=True)]


PROBE_SPACING = 8.0
"""The sparse schedule probes at the first evaluation at or past each ``PROBE_SPACING``-fold
of the first step's examples after the first (x8: 128, 1024 ... examples at B = 16)."""


class ProbeSchedule:
    """The probe's own schedule (``gns_probe_schedule="sparse"``): the first evaluation at or
    past each ``PROBE_SPACING``-fold of the examples seen after the first step (not step 0:
    the noise scale at initialisation says little about B_crit, and a quarter of the probes
    of the main job were those; ``gns_probe_schedule="evaluation"`` measures it), the last planned
    evaluation, and every evaluation from the first that reaches the target until
    ``CONFIRM`` in a row have (so the crossing is measured whichever ``target_crossing``
    rule the study reads; a touch that falls back starts the count again). ``run`` and
    ``done`` are its state, kept in checkpoints: a resumed trial measures where an
    uninterrupted one does."""

    def __init__(self, marks: set[int], objective: str, target: float | None,
                 maximize: bool) -> None:
        self.marks, self.objective, self.target, self.maximize = marks, objective, target, \
            maximize
        self.run, self.done = 0, False

    @classmethod
    def of(cls, parts: Parts) -> ProbeSchedule:
        evals = sorted(parts.schedule.eval_steps(parts.cfg))
        per = 1.0 / math.log2(PROBE_SPACING)  # marks per doubling
        spaced = geometric_eval_steps(list(parts.schedule.examples_after), per) - {0, 1}
        marks = {next((e for e in evals if e >= m), evals[-1]) for m in spaced}
        w = parts.workload
        return cls(marks | {evals[-1]}, f"val_{w.objective}", parts.cfg.target,
                   w.objective_direction == "maximize")

    def due(self, step: int, row: Row | None = None) -> bool:
        return self._at_target(row) or step in self.marks

    def _at_target(self, row: Row | None) -> bool:
        """Whether this evaluation is one of the crossing's (and count it)."""
        if row is None or self.target is None or self.done:
            return False
        value = float(row.get(self.objective, math.nan))
        hit = value >= self.target if self.maximize else value <= self.target
        self.run = self.run + 1 if hit else 0
        self.done = self.run >= CONFIRM
        return hit


class GradientNoiseProbe(Measurement):
    """B_simple = tr(S) / |G|^2 (McCandlish et al. 2018) of the training loss at the current
    weights, from a fixed seeded subset of n training examples (``probe_subset``), measured
    at every evaluation, on any number of workers, with or without accumulation.

    Gradient samples h_j, each the gradient of the mean loss over ``size`` examples:

    - norms without batch statistics: per-example gradients (size 1), torch.func in eval
      mode (no dropout), in chunks of at most ``PER_EXAMPLE_ELEMENTS`` elements;
    - batch-statistic norms (batch, ghost_batch, sync_batch, hybrid): one example's loss
      depends on its batch, so per-example gradients mean nothing; the samples are the
      gradients of consecutive chunks of the trial's norm batch size b, each normalised by
      its own statistics (norm layers in train mode, everything else in eval mode, running
      statistics restored). SyncBN is ordinary BatchNorm over a whole chunk on one worker,
      its cross-worker reduction off: the estimate is that of full-batch BN semantics with
      chunks of b, whatever the world size (through SyncBN's path each worker's gradient
      would carry the other workers' statistics paths). The result is the noise scale at
      the norm batch size: b tr(S_b) / |G_b|^2 in examples, S_b the covariance of a
      b-chunk's gradient, G_b its mean; it predicts a step of k chunks, k b examples.

    With m = n / size samples of the N training examples, mean h = sum_j h_j / m:

        s^2    = size * sum_j |h_j - h|^2 / (m - 1)    (unbiased for S^2, divisor N - 1)
        tr(S)  = (1 - 1/N) s^2                           (S: divisor N, one example drawn
                                                          uniformly from the training set)
        |G|^2  = |h|^2 - (1 - n/N) s^2 / n              (E|h|^2 = |G|^2 + (1 - n/N) S^2 / n
                                                          without replacement)

    both unbiased (for chunks, when a chunk's gradient is the mean of its examples'); at
    n = N with size 1 they are exactly the training set's |G|^2 and covariance trace. The
    standard error is a delete-one-group jackknife over up to ``PROBE_GROUPS`` contiguous
    groups of samples, corrected for the finite training set (``jackknife_se``). Under
    DDP worker r takes groups r, r + W, ... and the sums are all-reduced in float64
    (``GroupSums``): every worker gets the same value. Computed in the model's dtype,
    without autocast or augmentation. The model's parameters, gradients, buffers and
    train/eval modes are as before afterwards.
    """

    def __init__(self, x: Tensor, y: Tensor, loss: LossFn, examples: int, seed: int,
                 device: torch.device, groups: int = PROBE_GROUPS) -> None:
        self.x, self.y, self.loss, self.device = x, y, loss, device
        self.population = len(x)
        self.index = probe_subset(len(x), examples, seed)
        self.groups = groups
        self.schedule: BatchSchedule | None = None
        """The trial's batch schedule (``build`` sets it): the norm batch size of a step."""

    @classmethod
    def build(cls, parts: Parts) -> GradientNoiseProbe | None:
        """The trial's probe on ``gns_probe_examples`` examples; None when 0."""
        cfg = parts.cfg
        if cfg.gns_probe_examples == 0:
            return None
        probe = cls(parts.data.x_train, parts.data.y_train, parts.loss,
                    cfg.gns_probe_examples, cfg.seed, parts.device)
        probe.schedule = parts.schedule
        if cfg.gns_probe_schedule == "sparse":
            probe.when = ProbeSchedule.of(parts)
        return probe

    def state_dict(self) -> dict | None:
        when = self.when
        return {"run": when.run, "done": when.done} if isinstance(when, ProbeSchedule) \
            else None

    def load_state_dict(self, state: dict, step: int) -> None:
        if isinstance(self.when, ProbeSchedule):
            self.when.run, self.when.done = int(state["run"]), bool(state["done"])

    def evaluation(self, model: nn.Module, step: int) -> Row:
        """The columns at this evaluation: chunks of the norm batch size of its step."""
        return self.measure(model, self.schedule.plan_at(step).norm_batch_size).columns()

    def measure(self, model: nn.Module, norm_batch_size: int | None) -> NoiseEstimate:
        """The estimate at ``model``'s weights; ``norm_batch_size``: None without batch
        statistics, else the chunk size. A collective under DDP: every worker calls it."""
        size = norm_batch_size or 1
        samples = len(self.index) // size
        numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
        groups = max(1, min(self.groups, samples, max(2, GROUP_BYTES // (8 * numel + 8))))
        rank, size_of_world = world()
        owned = list(range(rank, groups, size_of_world)) if samples >= 2 else []
        spans = [range(k * samples // groups, (k + 1) * samples // groups) for k in owned]
        sample_ids = torch.tensor([j for span in spans for j in span], dtype=torch.long)
        rows = torch.tensor([i for i, span in enumerate(spans) for _ in span],
                            dtype=torch.long, device=self.device)
        idx = self.index[: samples * size].view(samples, size)[sample_ids].flatten()
        x, y = gather(self.x, idx, self.device), gather(self.y, idx, self.device)
        sums = GroupSums(owned, groups, numel, self.device)
        with (torch.enable_grad(), probe_mode(model, norm_batch_size is not None),
              warnings.catch_warnings()):
            # vmap's fallback for an op without a batching rule: slower, still exact
            warnings.filterwarnings("ignore", message="There is a performance drop")
            parts = (per_example_grads(model, self.loss, x, y) if norm_batch_size is None
                     else chunk_grads(model, self.loss, x, y, size))
            for part, grads in parts:
                sums.add(rows[part], grads)
        return NoiseEstimate.of(sums.reduce(), size, self.population)
