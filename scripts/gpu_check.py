"""One GPU, one command: lbt-study's GPU path measured, end to end.

    python scripts/gpu_check.py [--cifar-dir DIR] [--batch-sizes 512,2048] [--steps 20]
                                [--phases all] [--deadline-s 480] [--out gpu_check.md]

On one CUDA GPU, with CIFAR-10-shaped data and ResNet-18 (``cifar``, BatchNorm), in phases
(``--phases`` picks some; each is skipped when the deadline leaves it too little time, and
every phase's numbers are written to ``--json`` as soon as it ends):

1. ``agreement``: the same 30-step run in fp32 (TF32 off; seeds 0 and 1), under bf16
   autocast, and compiled under bf16: the final losses, so the fast path measures the same
   model (the fp32 seed-to-seed difference beside them);
2. ``throughput``: training examples/s at each batch size through lbt-study's loop
   (``run_training``, no Ray) beside a bare torch loop in the same process with the same
   model, precision, memory format, data placement, augmentation, optimizer and
   torch.compile: ``--steps`` warm-up steps, then ``--steps`` timed; MFU of both from the
   loop's FLOP count (torch's FlopCounterMode) against the device's datasheet peak, and
   against a bf16 matmul measured here;
3. ``ray``: the same trials through the runner (``run_study``: a local Ray cluster, one
   trial at a time, 1 worker, 1 GPU), their examples/s against the bare loop's;
4. ``oom``: a study of two trials: ResNet-18 at B = ``--oom-batch`` (131,072: no GPU holds
   it in one micro-batch), where the memory probe must find the largest micro-batch that
   fits, keep B by accumulation and train; and a model that fits at no micro-batch
   (``scripts/gpu_workloads.py``), which must end ``oom`` while the study goes on;
5. ``shared``: a 4-trial study with ``gpus_per_worker: 0.5`` (two trials at a time on the
   GPU), the default measurements on; its ``mfu`` and ``peak_memory_bytes`` per trial;
6. ``cost``: one default trial (ResNet-18, B = 512, the default evaluation schedule) with
   the measurements on (noise-scale probe, precise BN) and off: what they cost per
   evaluation and as a share of the training time;
7. ``tests``: the ``gpu``-marked tests (``pytest -m gpu``).

Without ``--cifar-dir`` the data are generated in the official CIFAR-10 python format
(50,000 + 10,000 images): each class a mean colour, each image that colour shifted by an
image-wide offset plus pixel noise, so a model learns (accuracy well above chance, below 1)
and a loss can be compared; speed is what real CIFAR-10 gives. Without a CUDA GPU it stops
with one line (exit code 1). ``--smoke-cpu`` runs the script on the CPU (pass toy sizes) to
test the script itself; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_workloads

from lbt_study import Study, load_results  # noqa: E402
from lbt_study.study.preflight import check_study  # noqa: E402
from lbt_study.train import run_training  # noqa: E402
from lbt_study.train.config import TrainConfig  # noqa: E402
from lbt_study.train.device import GpuSettings, data_bytes, gpu_settings  # noqa: E402
from lbt_study.train.measure import PEAK_FLOPS, device_peak_flops  # noqa: E402
from lbt_study.train.norms import NormSpec  # noqa: E402
from lbt_study.train.workloads import cifar  # noqa: E402

LR = 0.1
AGREE_NATS = 0.01
"""bf16 and compiled runs agree with fp32 when their final validation loss is within this."""
PHASES = ("tests", "agreement", "throughput", "cost", "ray", "shared", "oom")
MIN_SECONDS = {"agreement": 60, "throughput": 90, "ray": 60, "oom": 45, "shared": 45,
               "cost": 40, "tests": 30}
"""Seconds a phase needs at least (on an H200) before the deadline for it to start."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", type=Path, default=None,
                        help="extracted cifar-10-batches-py; default: generate data")
    parser.add_argument("--batch-sizes", default="512,2048",
                        help="comma-separated global batch sizes (default 512,2048)")
    parser.add_argument("--steps", type=int, default=20,
                        help="warm-up steps, then as many timed steps (default 20)")
    parser.add_argument("--trials", type=int, default=2,
                        help="trials of the ray phase (default 2: one per batch size)")
    parser.add_argument("--study-epochs", type=float, default=1.0,
                        help="epochs per trial of the shared and cost phases (default 1)")
    parser.add_argument("--model", default="resnet18", help="cifar model (default resnet18)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile in the throughput loops (default: on a GPU)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many training and validation images")
    parser.add_argument("--phases", default="all",
                        help=f"comma-separated, from {', '.join(PHASES)} (default all)")
    parser.add_argument("--oom-batch", type=int, default=None,
                        help="the oom phase's global batch size (default 131072; 64 with "
                        "--smoke-cpu)")
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="skip phases that could not finish within this many seconds")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where the studies' run directories go (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"),
                        help="the Markdown snippet for BENCHMARKS.md (default gpu_check.md)")
    parser.add_argument("--json", type=Path, default=None,
                        help="every phase's numbers as JSON (default: --out with .json)")
    parser.add_argument("--smoke-cpu", action="store_true",
                        help="run on the CPU to test the script itself (numbers mean nothing); "
                        "pass toy sizes: --model resnet_tiny --batch-sizes 16,32 --steps 2 "
                        "--limit 256")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be integers separated by commas, got "
                     f"{args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.steps < 1 or args.trials < 1:
        parser.error("batch sizes, --steps and --trials must be positive")
    args.phases = list(PHASES) if args.phases == "all" else \
        [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
    if args.compile is None:
        args.compile = not args.smoke_cpu
    if args.oom_batch is None:
        args.oom_batch = 64 if args.smoke_cpu else 131_072
    args.json = args.json or args.out.with_suffix(".json")
    return args


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check, or None."""
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"gpu_check: no CUDA GPU available (torch {torch.__version__}, {build}); "
            "run it on a machine with an NVIDIA GPU")


# ---------------------------------------------------------------- data

def write_fake_cifar(directory: Path, n_train: int = 50_000, n_val: int = 10_000) -> Path:
    """Learnable data in the official format (data_batch_1..5, test_batch): class k's images
    are its mean colour plus an image-wide colour offset (sd 24) and pixel noise (sd 48)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    colours = rng.uniform(80, 176, size=(10, 3))
    sizes = [(f"data_batch_{i + 1}", n_train // 5 + (i < n_train % 5)) for i in range(5)]
    for name, n in [*sizes, ("test_batch", n_val)]:
        labels = rng.integers(0, 10, n)
        mean = colours[labels] + rng.normal(0, 24, size=(n, 3))
        pixels = mean[:, :, None] + rng.normal(0, 48, size=(n, 3, 1024))
        batch = {b"labels": [int(v) for v in labels],
                 b"data": np.clip(pixels, 0, 255).astype(np.uint8).reshape(n, 3072)}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return directory


# ---------------------------------------------------------------- the loops

def loop_config(args: argparse.Namespace, batch: int, n: int, **over: object) -> TrainConfig:
    """2 x steps steps of B, evaluated after the warm-up half and at the end: the last row's
    throughput and MFU are those of the timed half. Measurements off (the cost phase has
    them)."""
    del n  # a steps budget: the same steps whatever the training-set size
    values: dict = dict(
        workload="cifar", model=args.model, norm="batch", batch_size=batch, lr=LR,
        schedule="constant", budget="steps", budget_steps=2 * args.steps,
        eval_every_examples=args.steps * batch, train_eval_examples=512, measure_gns=False,
        gns_probe_examples=0, precise_bn=False, divergence_factor=None,
        compile=args.compile, seed=0, gpus_per_worker=0 if args.smoke_cpu else 1)
    return TrainConfig(**{**values, **over})


def lbt_loop(cfg: TrainConfig, device: torch.device) -> dict:
    """The last row of a ``run_training``: the timed half's throughput and MFU."""
    rows: list[dict] = []
    out = run_training(cfg, rows.append, device=device)
    last = rows[-1]
    if out.status != "ok":
        raise RuntimeError(f"the loop ended {out.status}: {last.get('error')}")
    return last


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(cfg: TrainConfig, settings: GpuSettings, device: torch.device, steps: int,
              micro: int) -> float:
    """Examples/s of a minimal torch loop doing the loop's work: index, augment, forward and
    loss (autocast as set), backward (accumulating micro-batches), SGD step."""
    torch.manual_seed(0)
    data = cifar.WORKLOAD.load_data(0)
    model = cifar.WORKLOAD.make_model(cfg.model, NormSpec("batch")).to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if settings.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    on_device = settings.data_on_device or device.type == "cpu"
    x = data.x_train.to(device) if on_device else data.x_train.pin_memory()
    y = data.y_train.to(device) if on_device else data.y_train.pin_memory()
    gen = torch.Generator(device=device).manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(0)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.batch_size // micro):
            idx = torch.randint(len(x), (micro,), generator=cpu_gen)
            if on_device:
                xb, yb = x[idx.to(x.device)], y[idx.to(y.device)]
            else:
                xb = torch.empty((micro, *x.shape[1:]), pin_memory=True)
                torch.index_select(x, 0, idx, out=xb)
                xb, yb = xb.to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            xb = cifar.augment(xb, gen)
            if settings.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
                loss = nn.functional.cross_entropy(net(xb).float(), yb)
            (loss / (cfg.batch_size // micro)).backward()
        opt.step()

    for _ in range(steps):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def resolved_settings(cfg: TrainConfig, device: torch.device) -> GpuSettings:
    """What the loop resolves for this config on this device (the bare loop copies it)."""
    model = cifar.WORKLOAD.make_model(cfg.model, NormSpec("batch")).to(device)
    settings = gpu_settings(cfg, device, model, data_bytes(cifar.WORKLOAD.load_data(0)))
    del model
    return settings


def matmul_tflops(device: torch.device) -> float:
    """A bf16 8192^3 matmul's rate here, TFLOP/s (the mean of 10 after 3 warm-ups)."""
    if device.type != "cuda":
        return math.nan
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------- phases

@dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    n_train: int
    root: Path
    results: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.args.deadline_s - (time.monotonic() - self.t0)

    def save(self) -> None:
        self.args.json.write_text(json.dumps(self.results, indent=1, default=str))


def _num(value: object, fmt: str = ",.0f") -> str:
    return format(value, fmt) if isinstance(value, int | float) and math.isfinite(value) \
        else "n/a"


def phase_agreement(ctx: Context) -> dict:
    """fp32 (seeds 0, 1), bf16 and compiled bf16: the same 30 steps at the first B."""
    args, b, steps = ctx.args, ctx.args.batch_sizes[0], 30
    runs = {"fp32, TF32 off": {"precision": "fp32", "tf32": False},
            "fp32, TF32 off, seed 1": {"precision": "fp32", "tf32": False, "seed": 1},
            "bf16 autocast": {"precision": "bf16"},
            "bf16 autocast + torch.compile": {"precision": "bf16", "compile": True}}
    out = {}
    for name, over in runs.items():
        if ctx.args.smoke_cpu:
            over = {k: v for k, v in over.items() if k != "compile"}
        cfg = loop_config(args, b, ctx.n_train, **{
            "budget_steps": steps, "schedule": "cosine", "eval_every_examples": steps * b,
            "compile": False, "precise_bn": True, **over})
        t0 = time.perf_counter()
        row = lbt_loop(cfg, ctx.device)
        _free(ctx.device)
        out[name] = {k: float(row[k]) for k in ("train_loss", "val_loss", "val_accuracy")}
        out[name]["seconds"] = time.perf_counter() - t0
    ref = out["fp32, TF32 off"]
    for values in out.values():
        values["val_loss_minus_fp32"] = values["val_loss"] - ref["val_loss"]
        values["train_loss_minus_fp32"] = values["train_loss"] - ref["train_loss"]
    return {"batch_size": b, "steps": steps, "runs": out}


def phase_throughput(ctx: Context) -> dict:
    """Loop and bare examples/s at every B, MFU of both, the matmul ceiling."""
    rows = []
    for batch in ctx.args.batch_sizes:
        cfg = loop_config(ctx.args, batch, ctx.n_train)
        settings = resolved_settings(cfg, ctx.device)
        print(f"  B={batch}: lbt-study loop ...", flush=True)
        row = lbt_loop(cfg, ctx.device)
        _free(ctx.device)
        micro = int(row["micro_batch_size"])
        print(f"  B={batch}: bare torch loop (micro-batch {micro}) ...", flush=True)
        bare = bare_loop(cfg, settings, ctx.device, ctx.args.steps, micro)
        _free(ctx.device)
        rows.append({"batch_size": batch, "micro_batch_size": micro,
                     "loop": float(row["throughput"]), "bare": bare,
                     "mfu_loop": float(row["mfu"]),
                     "flops_per_example": float(row["flops_per_example"]),
                     "peak_memory_bytes": float(row["peak_memory_bytes"]),
                     "settings": settings.__dict__})
    peak = device_peak_flops(ctx.device, "bfloat16")
    measured = matmul_tflops(ctx.device)
    for r in rows:
        r["mfu_bare"] = r["flops_per_example"] * r["bare"] / peak
        r["loop_over_bare"] = r["loop"] / r["bare"]
        r["of_matmul_ceiling_loop"] = r["flops_per_example"] * r["loop"] / (measured * 1e12)
    return {"rows": rows, "peak_flops": peak, "matmul_tflops": measured}


def _run(study: Study, run_dir: Path, num_cpus: int | None = None) -> tuple:
    """Run a study through the runner; its trials and history tables."""
    from lbt_study.study.driver import run_study  # imports Ray

    checked = check_study(study)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_study(study, run_dir, checked.workload.objective_direction,
              num_cpus=num_cpus or os.cpu_count(), max_trial_cpus=checked.max_trial_cpus,
              target=checked.target, progress=lambda line: print("  " + line, flush=True))
    return load_results(run_dir)


def _cpus(ctx: Context, share: int) -> int:
    return max(1, min(4, (os.cpu_count() or 2) // share))


def phase_ray(ctx: Context) -> dict:
    """The throughput trials through Ray: one at a time, 1 worker, 1 GPU each."""
    args, sizes = ctx.args, ctx.args.batch_sizes[: ctx.args.trials]
    base = loop_config(args, sizes[0], ctx.n_train).model_dump(exclude_defaults=True)
    fixed = {k: v for k, v in base.items()
             if k not in ("workload", "batch_size", "eval_every_examples")}
    fixed["cpus_per_worker"] = _cpus(ctx, 2)

    def space(trial: object) -> dict:
        b = trial.suggest_categorical("batch_size", sizes)
        return {"batch_size": b, "eval_every_examples": args.steps * b}

    study = Study(name="gpu-ray", workload="cifar", space=space, trials=len(sizes),
                  fixed=fixed, max_concurrent_trials=1,
                  initial_points=[{"batch_size": b} for b in sizes])
    trials, history = _run(study, ctx.root / "ray")
    last = history.sort_values("step").groupby("trial_id").tail(1).set_index("trial_id")
    rows = []
    for t in trials.to_dict("records"):
        h = last.loc[t["trial_id"]] if t["trial_id"] in last.index else {}
        rows.append({"batch_size": t["batch_size"], "status": t["status"],
                     "throughput_timed_half": float(h.get("throughput", math.nan)),
                     "mfu_timed_half": float(h.get("mfu", math.nan)),
                     "wall_seconds": t["wall_seconds"], "error": t.get("error")})
    return {"rows": rows}


def phase_oom(ctx: Context) -> dict:
    """A batch no GPU holds in one micro-batch, and a model no micro-batch fits."""
    args = ctx.args
    cases = {"oversized": {"model": "oversized", "batch_size": 64},
             "big_batch": {"model": args.model, "batch_size": args.oom_batch}}

    def space(trial: object) -> dict:
        return dict(cases[trial.suggest_categorical("case", list(cases))])

    fixed = {"lr": LR, "budget": "steps", "budget_steps": 2, "gns_probe_examples": 0,
             "gpus_per_worker": 0 if args.smoke_cpu else 1, "cpus_per_worker": _cpus(ctx, 2),
             "norm": "batch"}
    if args.smoke_cpu:  # the CPU overcommits: only injected out-of-memory errors here
        cases["big_batch"]["fault_oom_above"] = max(1, args.oom_batch // 4)
        cases["oversized"]["fault_oom_above"] = 0
    study = Study(name="gpu-oom", workload="gpu_workloads:CIFAR_PLUS", space=space,
                  trials=2, fixed=fixed, max_concurrent_trials=1, max_failures=0,
                  initial_points=[{"case": c} for c in cases])
    t0 = time.perf_counter()
    trials, _ = _run(study, ctx.root / "oom")
    keep = ("model", "batch_size", "status", "error", "micro_batch_size",
            "accumulation_steps_used", "steps", "examples_seen", "peak_memory_bytes",
            "wall_seconds", "final_val_accuracy")
    return {"rows": [{k: t.get(k) for k in keep} for t in trials.to_dict("records")],
            "seconds": time.perf_counter() - t0}


def phase_shared(ctx: Context) -> dict:
    """Four trials, half a GPU each: two at a time."""
    sizes = [256, 512, 1024, 2048] if not ctx.args.smoke_cpu else [8, 16, 16, 32]

    def space(trial: object) -> dict:
        return {"batch_size": trial.suggest_categorical("batch_size", sorted(set(sizes))),
                "lr": trial.suggest_float("lr", 0.05, 0.4, log=True)}

    fixed = {"model": ctx.args.model, "norm": "batch", "epochs": ctx.args.study_epochs,
             "cpus_per_worker": _cpus(ctx, 4),
             "gpus_per_worker": 0 if ctx.args.smoke_cpu else 0.5}
    study = Study(name="gpu-shared", workload="cifar", space=space, trials=4, fixed=fixed,
                  initial_points=[{"batch_size": b, "lr": LR} for b in sizes])
    trials, _ = _run(study, ctx.root / "shared")
    spans = sorted((t["started_at"], t["finished_at"]) for t in trials.to_dict("records"))
    overlap = max((min(a[1], b[1]) - max(a[0], b[0]) for i, a in enumerate(spans)
                   for b in spans[i + 1:]), default=0.0)
    keep = ("batch_size", "status", "mfu", "peak_memory_bytes", "throughput", "train_seconds",
            "eval_seconds", "wall_seconds", "final_val_accuracy", "error")
    return {"rows": [{k: t.get(k) for k in keep} for t in trials.to_dict("records")],
            "longest_overlap_s": overlap}


def phase_cost(ctx: Context) -> dict:
    """One default trial with the measurements on and off: their cost per evaluation."""
    b = 512 if not ctx.args.smoke_cpu else 32
    out = {}
    settings = {"measurements on (defaults)": {},
                "noise-scale probe off": {"gns_probe_examples": 0},
                "precise BN off": {"precise_bn": False},
                "both off": {"gns_probe_examples": 0, "precise_bn": False}}
    for name, over in settings.items():
        cfg = TrainConfig(workload="cifar", model=ctx.args.model, norm="batch", batch_size=b,
                          lr=LR, epochs=ctx.args.study_epochs,
                          gpus_per_worker=0 if ctx.args.smoke_cpu else 1, **over)
        rows: list[dict] = []
        t0 = time.perf_counter()
        run_training(cfg, rows.append, device=ctx.device)
        _free(ctx.device)
        last = rows[-1]
        out[name] = {"evaluations": len(rows), "train_seconds": float(last["train_seconds"]),
                     "eval_seconds": float(last["eval_seconds"]),
                     "wall_seconds": time.perf_counter() - t0,
                     "gns_probe_last": float(last.get("gns_probe", math.nan)),
                     "gns_probe_se_last": float(last.get("gns_probe_se", math.nan))}
    off = out["both off"]
    for values in out.values():
        values["eval_over_train"] = values["eval_seconds"] / values["train_seconds"]
        values["extra_ms_per_evaluation"] = 1000 * (values["eval_seconds"]
                                                    - off["eval_seconds"]) / values["evaluations"]
    return {"batch_size": b, "runs": out}


def phase_tests(ctx: Context) -> dict:
    """The gpu-marked tests, in a child process (their output in the JSON)."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           str(root / "tests" / "test_gpu_path.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root,
                          timeout=max(30, ctx.left()))
    return {"returncode": proc.returncode, "tail": proc.stdout[-3000:] + proc.stderr[-2000:]}


RUNNERS: dict[str, Callable[[Context], dict]] = {
    "agreement": phase_agreement, "throughput": phase_throughput, "ray": phase_ray,
    "oom": phase_oom, "shared": phase_shared, "cost": phase_cost, "tests": phase_tests,
}


# ---------------------------------------------------------------- the snippet

def md_agreement(r: dict) -> list[str]:
    lines = [f"**bf16 and torch.compile against fp32** (B = {r['batch_size']}, {r['steps']} "
             "steps, cosine lr 0.1, the same seed and batches; TF32 off in fp32):", "",
             "| run | final train loss | final val loss | val accuracy | val loss - fp32 | "
             f"within {AGREE_NATS} |", "|---|---:|---:|---:|---:|---|"]
    for name, v in r["runs"].items():
        ok = "yes" if abs(v["val_loss_minus_fp32"]) <= AGREE_NATS else "**no**"
        lines.append(f"| {name} | {v['train_loss']:.4f} | {v['val_loss']:.4f} | "
                     f"{v['val_accuracy']:.4f} | {v['val_loss_minus_fp32']:+.4f} | {ok} |")
    return lines


def md_throughput(r: dict) -> list[str]:
    lines = [f"**Throughput** (examples/s of the timed steps; MFU = FLOPs per example "
             f"(FlopCounterMode) x examples/s / {_num(r['peak_flops'] / 1e12, '.1f')} TFLOP/s, "
             f"the datasheet's dense bf16 peak; a bf16 8192^3 matmul ran at "
             f"{_num(r['matmul_tflops'], '.0f')} TFLOP/s here):", "",
             "| B | micro-batch | lbt-study loop | bare torch loop | loop / bare | MFU loop | "
             "MFU bare | GFLOP/example | peak memory (GiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in r["rows"]:
        lines.append(f"| {s['batch_size']} | {s['micro_batch_size']} | {_num(s['loop'])} | "
                     f"{_num(s['bare'])} | {_num(s['loop_over_bare'], '.3f')} | "
                     f"{_num(s['mfu_loop'], '.3f')} | {_num(s['mfu_bare'], '.3f')} | "
                     f"{_num(s['flops_per_example'] / 1e9, '.2f')} | "
                     f"{_num(s['peak_memory_bytes'] / 2**30, '.1f')} |")
    return lines


def md_rows(title: str, rows: list[dict]) -> list[str]:
    if not rows:
        return [title, "", "(no rows)"]
    keys = list(rows[0])
    lines = [title, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            if isinstance(v, float):
                v = _num(v, ".4g") if abs(v) < 1e4 or not math.isfinite(v) else _num(v)
            cells.append(str(v).replace("|", "/")[:160])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(ctx: Context, name: str, data_note: str) -> str:
    res = ctx.results
    lines = [f"### {name}: `scripts/gpu_check.py` ({datetime.date.today().isoformat()})", "",
             f"torch {torch.__version__} (CUDA {torch.version.cuda or '-'}), one GPU; "
             f"{data_note}; {res.get('seconds', math.nan):.0f} s in all.", ""]
    render = {
        "agreement": md_agreement, "throughput": md_throughput,
        "ray": lambda r: md_rows("**Through Ray** (`run_study`, local cluster, 1 worker, "
                                 "1 GPU, one trial at a time):", r["rows"]),
        "oom": lambda r: md_rows("**Out of memory** (the memory probe on a real CUDA OOM):",
                                 r["rows"]),
        "shared": lambda r: md_rows(f"**Shared GPU** (gpus_per_worker 0.5; longest overlap "
                                    f"of two trials {r['longest_overlap_s']:.1f} s):",
                                    r["rows"]),
        "cost": lambda r: md_rows(f"**Measurement cost** (one default trial, B = "
                                  f"{r['batch_size']}):",
                                  [{"run": k, **v} for k, v in r["runs"].items()]),
        "tests": lambda r: [f"**gpu-marked tests**: exit {r['returncode']}", "", "```",
                            *r["tail"].strip().splitlines()[-6:], "```"],
    }
    for phase in PHASES:
        r = res.get(phase)
        if r is None:
            continue
        if "error" in r:
            lines += [f"**{phase}**: failed: `{r['error']}`", ""]
        elif "skipped" in r:
            lines += [f"**{phase}**: skipped ({r['skipped']})", ""]
        else:
            lines += [*render[phase](r), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def _out_of_time(signum: int, frame: object) -> None:
    raise TimeoutError("the phase ran past the deadline")


def run_phases(ctx: Context) -> None:
    signal.signal(signal.SIGALRM, _out_of_time)
    for phase in ctx.args.phases:
        if ctx.left() < MIN_SECONDS[phase] and not ctx.args.smoke_cpu:
            ctx.results[phase] = {"skipped": f"{ctx.left():.0f} s left of the deadline"}
            continue
        print(f"[{time.monotonic() - ctx.t0:6.1f} s] {phase} ...", flush=True)
        t0 = time.perf_counter()
        signal.alarm(max(10, int(ctx.left())) if not ctx.args.smoke_cpu else 0)
        try:
            ctx.results[phase] = RUNNERS[phase](ctx)
        except Exception as exc:  # one phase failing (or hanging) leaves the others' numbers
            traceback.print_exc()
            ctx.results[phase] = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                                  "traceback": traceback.format_exc()[-4000:]}
        finally:
            signal.alarm(0)
        ctx.results[phase + "_seconds"] = time.perf_counter() - t0
        print(f"[{time.monotonic() - ctx.t0:6.1f} s] {phase} done in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        ctx.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = None if args.smoke_cpu else no_gpu_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    device = torch.device("cpu" if args.smoke_cpu else "cuda")
    name = "CPU (smoke test)" if args.smoke_cpu else torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        if args.cifar_dir is None:
            n = (args.limit or 50_000, args.limit or 10_000)
            data_dir = write_fake_cifar(Path(tmp) / "cifar-10-batches-py", *n)
            data_note = f"generated CIFAR-10-shaped data ({n[0]:,} training images)"
        else:
            data_dir = args.cifar_dir.expanduser().resolve()
            data_note = f"CIFAR-10 from {data_dir}"
        os.environ[cifar.DIR_ENV] = str(data_dir)  # before Ray starts: trials inherit it
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent), *filter(None, [os.environ.get("PYTHONPATH")])])
        if args.limit is not None:
            os.environ[cifar.LIMIT_ENV] = str(args.limit)
        n_train = len(cifar.WORKLOAD.load_data(0).x_train)
        ctx = Context(args, device, n_train, args.run_dir or Path(tmp) / "runs")
        ctx.results.update(device=name, torch=torch.__version__, cuda=torch.version.cuda,
                           data=data_note, peaks={f"{c} {k}": v for (c, k), v in
                                                  PEAK_FLOPS.items() if c in name})
        run_phases(ctx)
        ctx.results["seconds"] = time.monotonic() - ctx.t0
        ctx.save()
        text = markdown(ctx, name, data_note)
    args.out.write_text(text)
    print(text)
    print(f"\nMarkdown for BENCHMARKS.md written to {args.out}, numbers to {args.json}")
    return 0 if not any("error" in v for v in ctx.results.values() if isinstance(v, dict)) \
        else 3


if __name__ == "__main__":
    sys.exit(main())
