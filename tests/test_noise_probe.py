"""The evaluation-time gradient noise probe (``GradientNoiseProbe``) against independent
computations: per-example gradients by a plain loop of backward() calls, the closed form of
linear regression, a Monte Carlo over subsets (finite-population correction, jackknife
standard error), and a single-process full-batch-BN oracle for SyncBN on 2 DDP workers."""

import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

from lbt_study.records.results import trial_record
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements.noise_scale import SYNC_BN_REASON
from lbt_study.train.measurements.probe import GradientNoiseProbe
from lbt_study.train.norms import use_torch_sync_bn
from lbt_study.train.sampling import probe_subset
from lbt_study.train.setup import assemble, build_model
from lbt_study.train.workload import get_workload
from lbt_study.train.workloads import linreg

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # spawn's children import the worker modules by name
    sys.path.insert(0, _HERE)
import _ddp  # noqa: E402
import _noise_probe_ddp  # noqa: E402

CPU = torch.device("cpu")


def flat_grad(model):
    return torch.cat([p.grad.detach().double().flatten() for p in model.parameters()])


def loop_per_example_grads(model, loss, x, y):
    """[n, P] per-example gradients, one loss.backward() per example (no torch.func)."""
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        loss(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(flat_grad(model))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def population(g):
    """(|G|^2, tr(S)) of the rows of g as the whole population: S with divisor N."""
    mean = g.mean(0)
    return float(mean @ mean), float(((g - mean) ** 2).sum(1).mean())


def test_whole_training_set_probe_is_the_exact_noise_scale_of_the_digits_mlp():
    """n = N: the probe's |G|^2 is exactly |mean g_i|^2 and tr(S) the population trace, so it
    matches per-example gradients from a Python loop of backward() calls. (The
    with-replacement formula |g|^2 - s^2/n would be off by B_simple/N, about 8% here.)"""
    cfg = TrainConfig(workload="digits", model="mlp", norm="none", batch_size=64, lr=0.1,
                      gns_probe_examples=10**6, measure_flops=False)
    parts = assemble(cfg, CPU)
    est = GradientNoiseProbe.build(parts).measure(parts.model, None)
    x, y = parts.data.x_train, parts.data.y_train
    grad_sq, trace = population(loop_per_example_grads(parts.model, parts.loss, x, y))
    print(f"digits mlp, n = N = {len(x)}: probe B_simple {est.b_simple:.4f} "
          f"(|G|^2 {est.grad_sq:.6g}, tr {est.trace_sigma:.6g}); loop {trace / grad_sq:.4f} "
          f"(|G|^2 {grad_sq:.6g}, tr {trace:.6g})")
    assert est.examples == len(x) == 1437 and est.sample_size == 1 and est.groups == 16
    assert est.grad_sq == pytest.approx(grad_sq, rel=0.01)
    assert est.trace_sigma == pytest.approx(trace, rel=0.01)
    assert est.b_simple == pytest.approx(trace / grad_sq, rel=0.01)
    assert est.se == 0.0  # the whole population was measured: nothing was sampled


def linreg_at(delta_sq):
    """The linreg model (float64) at w = w* + delta, |delta|^2 = delta_sq, delta along (1, -1,
    1, ...), and the population (|G|^2, tr S) there from all training examples:
    g_i = x_i (x_i . w - y_i) for half-MSE."""
    data = linreg.load_data(0)
    x, y = data.x_train.double(), data.y_train.double()
    signs = torch.tensor([(-1.0) ** i for i in range(linreg.DIM)], dtype=torch.float64)
    w = linreg.w_star().double() + signs * math.sqrt(delta_sq / linreg.DIM)
    model = linreg.linear(linreg.NormSpec("none")).double()
    with torch.no_grad():
        model[0].weight.copy_(w[None])
    g = x * (x @ w - y)[:, None]
    return model, x, y, population(g)


@pytest.mark.parametrize(("delta_sq", "examples"), [(linreg.W_STAR_SQ, 65536), (1.0, 16384)])
def test_linreg_probe_matches_the_closed_form_at_the_evaluated_weights(delta_sq, examples):
    """At w = 0 (|delta|^2 = |w*|^2) on the whole training set, and at |delta|^2 = 1 on a
    quarter of it: within 10% of the population values of the data and of the generative
    model's closed form, the subset's error within 4 standard errors."""
    model, x, y, (grad_sq, trace) = linreg_at(delta_sq)
    est = GradientNoiseProbe(x, y, linreg.half_mse, examples, 0, CPU).measure(model, None)
    closed = linreg.closed_form_noise_scale(delta_sq)
    print(f"linreg |delta|^2 = {delta_sq}, n = {est.examples}: probe |G|^2 {est.grad_sq:.5g} "
          f"tr {est.trace_sigma:.5g} B {est.b_simple:.2f} +- {est.se:.2f}; data |G|^2 "
          f"{grad_sq:.5g} tr {trace:.5g} B {trace / grad_sq:.2f}; closed form {closed}")
    assert est.grad_sq == pytest.approx(grad_sq, rel=0.10)
    assert est.trace_sigma == pytest.approx(trace, rel=0.10)
    assert est.grad_sq == pytest.approx(closed["grad_sq"], rel=0.10)
    assert est.trace_sigma == pytest.approx(closed["trace_sigma"], rel=0.10)
    assert est.b_simple == pytest.approx(closed["b_simple"], rel=0.10)
    if examples < len(x):
        assert est.se > 0 and abs(est.b_simple - trace / grad_sq) < 4 * est.se
    else:
        assert est.grad_sq == pytest.approx(grad_sq, rel=1e-9) and est.se == 0.0


def test_subset_estimates_are_unbiased_without_replacement_and_the_se_is_calibrated():
    """400 subsets of n = 128 from N = 256 examples: the mean |G|^2 estimate is the
    population's (the with-replacement formula is biased by -S^2/N, 10 Monte Carlo standard
    errors here), and the mean jackknife SE is the spread of B_simple over subsets (without
    the finite-population factor it would be sqrt(2) too large)."""
    model, x, y, _ = linreg_at(0.25)
    x, y = x[:256], y[:256]
    grad_sq, trace = population(x * (x @ model[0].weight.detach()[0] - y)[:, None])
    ests = [GradientNoiseProbe(x, y, linreg.half_mse, 128, seed, CPU).measure(model, None)
            for seed in range(400)]
    grads = [e.grad_sq for e in ests]
    mc_se = statistics.stdev(grads) / math.sqrt(len(ests))
    naive = [e.grad_sq - e.trace_sigma / (len(x) - 1) for e in ests]  # -(n/N) s^2/n
    spread = statistics.stdev([e.b_simple for e in ests])
    mean_se = statistics.mean([e.se for e in ests])
    print(f"|G|^2: population {grad_sq:.4f}, mean estimate {statistics.mean(grads):.4f} "
          f"(MC se {mc_se:.4f}), with-replacement formula {statistics.mean(naive):.4f}; "
          f"tr: population {trace:.3f}, mean {statistics.mean(e.trace_sigma for e in ests):.3f}"
          f"; B spread {spread:.2f}, mean jackknife SE {mean_se:.2f}")
    assert abs(statistics.mean(grads) - grad_sq) < 3 * mc_se
    assert abs(statistics.mean(naive) - grad_sq) > 6 * mc_se  # the test can tell them apart
    assert statistics.mean(e.trace_sigma for e in ests) == pytest.approx(trace, rel=0.02)
    assert 0.8 < mean_se / spread < 1.25


def snapshot(model):
    return {
        "params": {k: p.detach().clone() for k, p in model.named_parameters()},
        "buffers": {k: b.clone() for k, b in model.named_buffers()},
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "grad_values": {k: None if p.grad is None else p.grad.clone()
                        for k, p in model.named_parameters()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "forwards": {k: "forward" in vars(m) for k, m in model.named_modules()},
        "rng": torch.get_rng_state(),
    }


def assert_same(before, after):
    for kind in ("params", "buffers"):
        for k, v in before[kind].items():
            assert torch.equal(v, after[kind][k]), (kind, k)
    for k, g in before["grads"].items():
        assert after["grads"][k] is g, k  # the very same tensor (or None)
        if g is not None:
            assert torch.equal(g, before["grad_values"][k]), k
    assert after["modes"] == before["modes"] and after["forwards"] == before["forwards"]
    assert torch.equal(after["rng"], before["rng"])


@pytest.mark.parametrize("norm", ["none", "layer", "batch", "ghost_batch", "sync_batch",
                                  "hybrid"])
def test_the_probe_leaves_the_model_as_it_was(norm):
    cfg = TrainConfig(workload="digits", model="cnn", norm=norm, batch_size=64, lr=0.1,
                      ghost_batch_size=16, gns_probe_examples=256, measure_flops=False)
    parts = assemble(cfg, CPU)
    probe = GradientNoiseProbe.build(parts)
    model = parts.model
    xb, yb = parts.batch(torch.arange(64))
    parts.loss(model(xb), yb).backward()  # populated grads (and moved BN statistics) ...
    model[-1].weight.grad = None  # ... and one left None
    model.train()
    model[2].eval()  # a mixed mode must come back as it was
    before = snapshot(model)
    est = probe.measure(model, parts.schedule.plan_at(0).norm_batch_size)
    assert math.isfinite(est.b_simple) and est.se > 0
    assert_same(before, snapshot(model))
    model.eval()
    before = snapshot(model)
    assert probe.measure(model, parts.schedule.plan_at(0).norm_batch_size) == est
    assert_same(before, snapshot(model))


def test_torch_sync_batch_norm_the_gpu_swap_goes_the_same_local_way():
    """On a GPU ``use_torch_sync_bn`` puts torch's SyncBatchNorm in; the probe runs it as
    ordinary BatchNorm over the chunk too (and puts its own forward back)."""
    cfg = TrainConfig(workload="digits", model="cnn", norm="sync_batch", batch_size=64,
                      lr=0.1, gns_probe_examples=512, measure_flops=False)
    parts = assemble(cfg, CPU)
    probe = GradientNoiseProbe.build(parts)
    ours = probe.measure(parts.model, 64)
    swapped = use_torch_sync_bn(parts.model)
    assert isinstance(swapped[1], torch.nn.SyncBatchNorm)
    before = snapshot(swapped)
    assert probe.measure(swapped, 64).b_simple == pytest.approx(ours.b_simple,
                                                                rel=1e-6)
    assert_same(before, snapshot(swapped))


def test_every_evaluation_row_has_the_probe_and_the_trials_table_its_summaries():
    cfg = {"workload": "digits", "model": "mlp", "norm": "none", "batch_size": 64, "lr": 0.1,
           "epochs": 2, "measure_flops": False, "gns_probe_examples": 512, "target": 0.5,
           "gns_probe_schedule": "evaluation"}
    rows = []
    run_training(TrainConfig(**cfg), rows.append)
    assert len(rows) > 5 and rows[0]["step"] == 0
    for row in rows:
        assert row["gns_probe"] > 0 and 0 < row["gns_probe_se"] < math.inf
    assert math.isnan(rows[-1]["gns_simple"])  # one worker without accumulation
    assert rows[0]["gns_simple_reason"] == rows[-1]["gns_simple_reason"] == (
        "one worker without accumulation: a step gives one batch size")
    rec = trial_record("t", cfg, rows, 1.0, None, "maximize", target=0.5)
    assert rec["final_gns_probe"] == rows[-1]["gns_probe"]
    assert rec["gns_simple_reason"] == rows[-1]["gns_simple_reason"]
    assert rec["reached_target"]
    first = next(i for i, r in enumerate(rows) if r["objective"] >= 0.5)  # the default rule
    assert rec["gns_at_target"] == rows[first]["gns_probe"]
    assert rec["gns_probe_se_at_target"] == rows[first]["gns_probe_se"]
    assert rec["gns_mean_to_target"] == pytest.approx(
        statistics.mean(r["gns_probe"] for r in rows[: first + 1]))
    assert rec["gns_probe_seconds"] > 0 and rec["gns_probe_seconds"] <= rec["eval_seconds"]
    off = []
    run_training(TrainConfig(**{**cfg, "gns_probe_examples": 0, "epochs": 0.2}), off.append)
    assert all(math.isnan(r["gns_probe"]) and math.isnan(r["gns_probe_se"]) for r in off)
    assert off[-1]["gns_probe_seconds"] == 0


def test_the_probe_measures_once_per_doubling_and_at_the_crossing():
    """The default schedule: not step 0; the first evaluation past each 8-fold of the
    examples seen, the last, and every evaluation from the first at the target until two in
    a row are; the same values there as when it measures at every evaluation."""
    cfg = {"workload": "digits", "model": "mlp", "norm": "none", "batch_size": 16, "lr": 0.1,
           "epochs": 2, "measure_flops": False, "gns_probe_examples": 256, "target": 0.9}
    every, sparse = [], []
    run_training(TrainConfig(**cfg, gns_probe_schedule="evaluation"), every.append)
    run_training(TrainConfig(**cfg), sparse.append)
    assert [r["val_accuracy"] for r in every] == [r["val_accuracy"] for r in sparse]
    measured = [r["step"] for r in sparse if not math.isnan(r["gns_probe"])]
    examples = {r["step"]: r["examples_seen"] for r in sparse}
    hits = [r["step"] for r in sparse if r["val_accuracy"] >= 0.9]
    doublings = [s for s in measured if s and s not in hits[:2]]
    seen = [examples[s] for s in doublings]
    assert 0 not in measured and measured[-1] == sparse[-1]["step"]
    assert not math.isnan(every[0]["gns_probe"]) and every[0]["step"] == 0
    assert hits[0] in measured and hits[1] in measured  # the crossing under both rules
    assert all(b >= 1.99 * a for a, b in zip(seen, seen[1:-1], strict=False))  # ~1 a doubling
    assert len(measured) < len(sparse) / 2
    for r, e in zip(sparse, every, strict=True):
        if not math.isnan(r["gns_probe"]):
            assert r["gns_probe"] == e["gns_probe"]
    rec = trial_record("t", cfg, sparse, 1.0, None, "maximize", target=0.9)
    assert rec["gns_at_target"] == next(r["gns_probe"] for r in sparse if r["step"] == hits[0])


def test_gns_at_target_is_the_probe_at_the_evaluation_that_reached_it():
    """Literal rows: the target 0.9 is first reached at step 20 (and kept at 30), the
    crossing interpolated between steps 10 and 20; the mean runs over steps 0, 10, 20."""
    rows = [{"step": s, "examples_seen": 8 * s, "epoch": s / 100, "train_seconds": s / 10,
             "val_loss": 1 - acc, "objective": acc, "gns_probe": gns, "gns_probe_se": se,
             "status": "running"}
            for s, acc, gns, se in [(0, 0.1, 10.0, 1.0), (10, 0.5, math.nan, math.nan),
                                    (20, 0.95, 30.0, 3.0), (30, 0.97, 100.0, 9.0),
                                    (40, 0.98, 1000.0, 90.0)]]
    for crossing in ("first", "confirmed"):
        rec = trial_record("t", {}, rows, 1.0, None, "maximize", target=0.9, crossing=crossing)
        assert 10 < rec["steps_to_target"] < 20
        assert (rec["gns_at_target"], rec["gns_probe_se_at_target"]) == (30.0, 3.0)
        assert rec["gns_mean_to_target"] == pytest.approx(20.0)  # NaN at step 10 skipped
    assert rec["final_gns_probe"] == 1000.0
    never = trial_record("t", {}, rows, 1.0, None, "maximize", target=0.99)
    assert not never["reached_target"] and math.isnan(never["gns_at_target"])


def full_batch_bn_oracle(cfg, state):
    """B_simple of the chunk gradients, one process: the trained weights in a model whose
    SyncBN is plain BatchNorm (no process group), chunks of the norm batch size over the
    probe's subset in order, train mode, one backward() per chunk; the formulas of the
    probe's docstring written out here."""
    workload = get_workload(cfg.workload)
    model = build_model(cfg, workload, CPU)
    model.load_state_dict(state)
    model.train()
    data = workload.load_data(cfg.seed)
    x, y = data.x_train.double(), data.y_train
    size = cfg.batch_size  # sync_batch: micro-batch x workers = B
    idx = probe_subset(len(x), cfg.gns_probe_examples, cfg.seed)
    h = []
    for chunk in idx[: len(idx) // size * size].split(size):
        model.zero_grad()
        workload.loss(model(x[chunk]), y[chunk]).backward()
        h.append(flat_grad(model))
    h = torch.stack(h)
    m, n, big_n = len(h), len(h) * size, len(x)
    var = size * float(((h - h.mean(0)) ** 2).sum()) / (m - 1)
    mean = h.mean(0)
    grad_sq = float(mean @ mean) - (1 - n / big_n) * var / n
    return (1 - 1 / big_n) * var / grad_sq


@pytest.fixture(scope="module")
def two_worker_probes(tmp_path_factory):
    """2-worker runs (gloo): the digits CNN under SyncBN, and the MLP without norms."""
    base = {"workload": "digits", "batch_size": 32, "workers": 2, "lr": 0.05,
            "dtype": "float64", "epochs": 0.12, "seed": 3, "eval_every_examples": 10**9,
            "measure_flops": False, "gns_probe_schedule": "evaluation"}  # step 0 measured
    configs = [{**base, "model": "cnn", "norm": "sync_batch"},
               {**base, "model": "mlp", "norm": "none"}]
    per_rank = _ddp.spawn(_noise_probe_ddp.probe_runs, tmp_path_factory.mktemp("probe"),
                          configs)
    return configs, per_rank


def test_sync_batch_probe_on_two_workers_is_the_full_batch_bn_oracle(two_worker_probes):
    configs, per_rank = two_worker_probes
    cfg = TrainConfig(**configs[0])
    rank0, rank1 = per_rank[0][0], per_rank[1][0]
    assert [r["step"] for r in rank0["rows"]] == [0, 6]
    for row0, row1 in zip(rank0["rows"], rank1["rows"], strict=True):
        assert row0["gns_probe"] == row1["gns_probe"]
        assert row0["gns_probe_se"] == row1["gns_probe_se"]
        assert math.isnan(row0["gns_simple"])  # the DDP estimator is invalid under SyncBN
    assert rank0["rows"][0]["gns_simple_reason"] == SYNC_BN_REASON
    rec = trial_record("t", configs[0], rank0["rows"], 1.0, None)
    assert rec["gns_simple_reason"] == SYNC_BN_REASON and math.isnan(rec["final_gns_simple"])
    initial = build_model(cfg, get_workload("digits"), CPU).state_dict()
    for row, state in ((rank0["rows"][0], initial), (rank0["rows"][-1], rank0["state"])):
        oracle = full_batch_bn_oracle(cfg, state)
        print(f"SyncBN, 2 workers, step {row['step']}: probe {row['gns_probe']:.6f} +- "
              f"{row['gns_probe_se']:.3f}, full-batch-BN oracle {oracle:.6f}")
        assert abs(row["gns_probe"] - oracle) <= 2 * row["gns_probe_se"]
        assert row["gns_probe"] == pytest.approx(oracle, rel=1e-6)  # the same chunks


def test_per_example_probe_on_two_workers_equals_one_process(two_worker_probes):
    configs, per_rank = two_worker_probes
    rows0, rows1 = per_rank[0][1]["rows"], per_rank[1][1]["rows"]
    assert rows0[-1]["gns_simple_reason"] is None and math.isfinite(rows0[-1]["gns_simple"])
    cfg = TrainConfig(**{**configs[1], "workers": 1})
    parts = assemble(cfg, CPU)
    single = GradientNoiseProbe.build(parts).measure(parts.model, None)  # the initial weights
    print(f"MLP step 0: 2 workers {rows0[0]['gns_probe']:.9f}, one process "
          f"{single.b_simple:.9f}")
    assert rows0[0]["gns_probe"] == rows1[0]["gns_probe"]
    assert rows0[0]["gns_probe"] == pytest.approx(single.b_simple, rel=1e-9)
    assert rows0[0]["gns_probe_se"] == pytest.approx(single.se, rel=1e-9)
