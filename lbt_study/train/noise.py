"""The gradient noise scale of one trial, two ways.

- ``NoiseScaleProbe`` (columns ``gns_simple`` ...): the two-batch-size estimator of
  ``lbt_study.measure`` fed during training steps, from a DDP comm hook or micro-batch
  gradients; where its two batch sizes come from (``BatchSchedule.gns_batch_sizes``), its
  restart at a batch-growth phase, and why it is NaN where it is (``gns_simple_reason``).
- ``GradientNoiseProbe`` (columns ``gns_probe``, ``gns_probe_se``): measured at every
  evaluation from per-example (or norm-batch chunk) gradients of a fixed training subset,
  in every trial, with a jackknife standard error.
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
from torch.nn.parallel import DistributedDataParallel as DDP

from lbt_study.batching import BatchPlan, BatchSchedule
from lbt_study.config import TrainConfig
from lbt_study.device import gather, world
from lbt_study.measure import GnsMeter, MicroBatchGradients, gns_comm_hook, gns_unmeasured
from lbt_study.norms import GhostBatchNorm, SyncBatchNorm
from lbt_study.workload import Data

SYNC_BN_REASON = (
    "sync_batch across workers: each worker's local gradient carries the statistics path of "
    "every worker's loss, which cancels in the average but not in the local-vs-global "
    "difference the estimator reads; see gns_probe")


class NoiseScaleProbe:
    """Feeds a ``GnsMeter`` from the step: a DDP comm hook (worker-local vs all-reduced
    gradients) or micro-batch gradients under accumulation on one worker."""

    def __init__(self, meter: GnsMeter, micro: MicroBatchGradients | None,
                 schedule: BatchSchedule, data_parallel: bool) -> None:
        self.meter, self.micro = meter, micro
        self.schedule, self.data_parallel = schedule, data_parallel
        self.plan: BatchPlan | None = None

    @classmethod
    def attach(cls, schedule: BatchSchedule, model: nn.Module, ddp: DDP | None, ema: float,
               device: torch.device) -> NoiseScaleProbe | None:
        """The probe for the first step's plan, or None when a step gives one batch size
        or the estimate would be invalid (``gns_simple_reason``)."""
        plan = schedule.plan_at(1)
        sizes = schedule.gns_batch_sizes(plan, ddp is not None)
        if sizes is None or (ddp is not None and schedule.norm == "sync_batch"):
            return None
        meter = GnsMeter(*sizes, ema, device)
        if ddp is not None:
            ddp.register_comm_hook(None, gns_comm_hook(meter))
            return cls(meter, None, schedule, True)
        micro = MicroBatchGradients(list(model.parameters()), plan.accumulation_steps)
        return cls(meter, micro, schedule, False)

    def use_plan(self, plan: BatchPlan) -> None:
        """At a batch-growth phase the two batch sizes change and the EMAs restart."""
        if plan is self.plan:  # every step calls it: the same phase costs nothing
            return
        self.plan = plan
        sizes = self.schedule.gns_batch_sizes(plan, self.data_parallel)
        if sizes is not None and sizes != (self.meter.small_batch, self.meter.big_batch):
            self.meter.restart(*sizes)

    def start_step(self) -> None:
        if self.micro is not None:
            self.micro.start_step()

    def after_backward(self) -> None:
        if self.micro is not None:
            self.micro.after_backward(self.meter)

    def end_step(self) -> None:
        if self.micro is not None:
            self.micro.end_step(self.meter)
        self.meter.end_step()


def read_noise_scale(probe: NoiseScaleProbe | None) -> dict[str, float]:
    """The noise-scale columns of an evaluation row (NaN where unmeasured)."""
    return probe.meter.read() if probe is not None else gns_unmeasured()


def gns_simple_reason(cfg: TrainConfig, schedule: BatchSchedule, workers: int) -> str | None:
    """Why ``gns_simple`` is NaN in this trial, or None where it is measured."""
    if not cfg.measure_gns:
        return "measure_gns is off"
    if workers > 1 and schedule.norm == "sync_batch":
        return SYNC_BN_REASON
    if schedule.gns_batch_sizes(schedule.plan_at(1), workers > 1) is None:
        return "one worker without accumulation: a step gives one batch size"
    return None


# --- The evaluation-time probe ---------------------------------------------------------------

PROBE_GROUPS = 16
"""Groups of the delete-one-group jackknife (fewer when there are fewer samples)."""
GROUP_BYTES = 2**30
"""Bound on the stored group sums (one float64 vector of all trainable parameters per group
a worker holds): a model too large for 16 of them gets fewer groups (at least 2)."""
PER_EXAMPLE_ELEMENTS = 2**24
"""Per-example gradient elements held at once (64 MiB in float32): the vmap chunk."""
BATCH_STATISTIC_MODULES = (_BatchNorm, GhostBatchNorm)
"""Modules normalising by batch statistics (BatchNorm, SyncBN, HybridNorm, Ghost BN)."""

LossFn = Callable[[Tensor, Tensor], Tensor]


def probe_subset(train_examples: int, examples: int, seed: int) -> Tensor:
    """Indices of a fixed training subset for the probe (and precise BN): the first
    ``examples`` (capped at the training set) of a permutation seeded by ``seed + 2`` (the
    train-evaluation subset uses ``seed + 1``), the same at every evaluation and on every
    worker."""
    gen = torch.Generator().manual_seed(seed + 2)
    return torch.randperm(train_examples, generator=gen)[: min(examples, train_examples)]


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
        """The estimate, and its delete-one-group jackknife standard error
        sqrt(c (K-1)/K sum_k (B_(-k) - mean B_(-k))^2), c = 1 - n/N for per-example
        samples (0 when the whole training set is measured: nothing is sampled), 1 for
        chunks (their partition stays random)."""
        samples, _, _ = stats.total()
        grad_sq, trace = sampled_noise(*stats.total(), size, population)
        groups = len(stats.counts)
        left_out = [_ratio(*sampled_noise(*stats.without(k), size, population))
                    for k in range(groups)]
        se = math.nan
        if groups >= 2 and all(math.isfinite(b) for b in left_out):
            mean = sum(left_out) / groups
            fpc = 1.0 - samples * size / population if size == 1 else 1.0
            spread = sum((b - mean) ** 2 for b in left_out)
            se = math.sqrt(max(fpc, 0.0) * (groups - 1) / groups * spread)
        return cls(_ratio(grad_sq, trace), se, trace, grad_sq, int(samples) * size, size,
                   groups)

    def columns(self) -> dict[str, float]:
        return {"gns_probe": self.b_simple, "gns_probe_se": self.se}


def probe_unmeasured() -> dict[str, float]:
    return {"gns_probe": math.nan, "gns_probe_se": math.nan}


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
            del m.forward
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
    """(chunk j, [h_j of each parameter, [1, numel]]) for consecutive chunks of ``size``
    examples of (x, y): h_j the gradient of the chunk's mean loss, by
    torch.autograd.grad (no .grad is touched)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for j, start in enumerate(range(0, len(x), size)):
        xc, yc = x[start:start + size], y[start:start + size]
        grads = torch.autograd.grad(loss(model(xc), yc), params, allow_unused=True)
        yield slice(j, j + 1), [(torch.zeros_like(p) if g is None else g).reshape(1, -1)
                                for p, g in zip(params, grads, strict=True)]


class GradientNoiseProbe:
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
    groups of samples (``NoiseEstimate.of``). Under DDP worker r takes groups r, r + W, ...
    and the sums are all-reduced in float64 (``GroupSums``): every worker gets the same
    value. Computed in the model's dtype, without autocast or augmentation. The model's
    parameters, gradients, buffers and train/eval modes are as before afterwards.
    """

    def __init__(self, x: Tensor, y: Tensor, loss: LossFn, examples: int, seed: int,
                 device: torch.device, groups: int = PROBE_GROUPS) -> None:
        self.x, self.y, self.loss, self.device = x, y, loss, device
        self.population = len(x)
        self.index = probe_subset(len(x), examples, seed)
        self.groups = groups

    @classmethod
    def build(cls, cfg: TrainConfig, data: Data, loss: LossFn,
              device: torch.device) -> GradientNoiseProbe | None:
        """The trial's probe on ``cfg.gns_probe_examples`` examples; None when 0."""
        if cfg.gns_probe_examples == 0:
            return None
        return cls(data.x_train, data.y_train, loss, cfg.gns_probe_examples, cfg.seed, device)

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


def read_gradient_noise(probe: GradientNoiseProbe | None, model: nn.Module,
                        plan: BatchPlan) -> dict[str, float]:
    """The probe's columns of an evaluation row (NaN when it is off)."""
    if probe is None:
        return probe_unmeasured()
    return probe.measure(model, plan.norm_batch_size).columns()
