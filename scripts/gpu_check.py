"""One GPU, one command: how fast is lbt-study's training loop on it, and does a study run?

    python scripts/gpu_check.py [--cifar-dir DIR] [--batch-sizes 512,2048] [--steps 20]
                                [--trials 2] [--compile] [--out gpu_check.md]

On one CUDA GPU, with the CIFAR-10 ResNet-18 workload (``cifar``, BatchNorm):
1. training examples/s at each batch size through lbt-study's loop (``run_training`` called
   directly, no Ray), beside a bare torch loop in the same process with the same model,
   precision, memory format, data placement, augmentation and optimizer. Each runs
   ``--steps`` warm-up steps (cuDNN autotuning, compilation), then ``--steps`` timed steps;
2. MFU as the loop reports it (``mfu`` of the timed steps; n/a for GPUs without a listed peak);
3. a ``--trials`` trial study through the runner (``run_study``, 1 GPU per trial);
then prints the results and writes a Markdown snippet for BENCHMARKS.md naming the device.

Without ``--cifar-dir`` the data are generated: random images and labels written in the
official CIFAR-10 python format (50,000 + 10,000 images). Speed is then real, accuracy not.
Without a CUDA GPU it stops with one line (exit code 1). ``--smoke-cpu`` runs the whole
script on the CPU (pass toy sizes) to test the script itself; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lbt_study import Study, load_results
from lbt_study.config import TrainConfig
from lbt_study.device import GpuSettings, data_bytes, gpu_settings
from lbt_study.errors import UserError
from lbt_study.norms import NormSpec
from lbt_study.preflight import check_study
from lbt_study.train import run_training
from lbt_study.workloads import cifar

LR = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", type=Path, default=None,
                        help="extracted cifar-10-batches-py; default: generate random data")
    parser.add_argument("--batch-sizes", default="512,2048",
                        help="comma-separated global batch sizes (default 512,2048)")
    parser.add_argument("--steps", type=int, default=20,
                        help="warm-up steps, then as many timed steps (default 20)")
    parser.add_argument("--trials", type=int, default=2, help="study trials (default 2)")
    parser.add_argument("--study-epochs", type=float, default=1.0,
                        help="epochs per study trial (default 1)")
    parser.add_argument("--model", default="resnet18", help="cifar model (default resnet18)")
    parser.add_argument("--compile", action="store_true", help="torch.compile, in both loops")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many training and validation images")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="the study's run directory (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"),
                        help="where to write the Markdown snippet (default gpu_check.md)")
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
    """Random uint8 images and labels in the official format: data_batch_1..5, test_batch."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = [(f"data_batch_{i + 1}", n_train // 5 + (i < n_train % 5)) for i in range(5)]
    for name, n in [*sizes, ("test_batch", n_val)]:
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return directory


# ---------------------------------------------------------------- the two loops

def loop_config(args: argparse.Namespace, batch: int, n: int) -> TrainConfig:
    """2 x steps steps of B (epochs chosen so), evaluated after the warm-up half and at the
    end: the last row's throughput and MFU are those of the timed half."""
    steps = 2 * args.steps
    return TrainConfig(
        workload="cifar", model=args.model, norm="batch", batch_size=batch, lr=LR,
        schedule="constant", epochs=(steps * batch - batch / 2) / n,
        eval_every_examples=args.steps * batch, train_eval_examples=512, measure_gns=False,
        divergence_factor=None, compile=args.compile, seed=0,
        gpus_per_worker=0 if args.smoke_cpu else 1,
    )


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


@dataclass
class Speed:
    batch: int
    micro: int
    loop: float
    bare: float
    mfu: float
    peak_memory: float


def measure_speeds(args: argparse.Namespace, device: torch.device,
                   n: int) -> tuple[list[Speed], GpuSettings]:
    speeds, settings = [], None
    for batch in args.batch_sizes:
        cfg = loop_config(args, batch, n)
        settings = resolved_settings(cfg, device)
        print(f"B={batch}: lbt-study loop ...", flush=True)
        row = lbt_loop(cfg, device)
        _free(device)
        micro = int(row["micro_batch_size"])
        print(f"B={batch}: bare torch loop (micro-batch {micro}) ...", flush=True)
        bare = bare_loop(cfg, settings, device, args.steps, micro)
        _free(device)
        speeds.append(Speed(batch, micro, float(row["throughput"]), bare, float(row["mfu"]),
                            float(row["peak_memory_bytes"])))
    assert settings is not None  # at least one batch size (checked by parse_args)
    return speeds, settings


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------- the study

def run_the_study(args: argparse.Namespace, run_dir: Path) -> list[dict]:
    """``--trials`` trials through the runner, 1 GPU each; their rows of the trials table."""
    from lbt_study.runner import run_study  # imports Ray

    batch_sizes = args.batch_sizes

    def space(trial: object) -> dict:
        return {"batch_size": trial.suggest_categorical("batch_size", batch_sizes),
                "lr": trial.suggest_float("lr", 0.05, 0.4, log=True)}

    cpus = max(1, min(4, (os.cpu_count() or 2) // 2))
    study = Study(
        name="gpu-check", workload="cifar", space=space, trials=args.trials,
        fixed={"model": args.model, "norm": "batch", "epochs": args.study_epochs,
               "compile": args.compile, "cpus_per_worker": cpus,
               "gpus_per_worker": 0 if args.smoke_cpu else 1},
        initial_points=[{"batch_size": b, "lr": LR} for b in batch_sizes][: args.trials],
    )
    checked = check_study(study)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_study(study, run_dir, checked.workload.objective_direction,
              num_cpus=os.cpu_count(), max_trial_cpus=checked.max_trial_cpus,
              progress=lambda line: print(line, flush=True))
    trials, _ = load_results(run_dir)
    return trials.to_dict("records")


# ---------------------------------------------------------------- report

def _num(value: float, fmt: str = ",.0f") -> str:
    return format(value, fmt) if isinstance(value, int | float) and math.isfinite(value) \
        else "n/a"


def speed_table(speeds: list[Speed]) -> list[str]:
    lines = ["| B | micro-batch | lbt-study loop (examples/s) | bare torch loop (examples/s) | "
             "loop / bare | MFU | peak memory (GiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in speeds:
        lines.append(f"| {s.batch} | {s.micro} | {_num(s.loop)} | {_num(s.bare)} | "
                     f"{_num(s.loop / s.bare, '.3f')} | {_num(s.mfu, '.3f')} | "
                     f"{_num(s.peak_memory / 2**30, '.1f')} |")
    return lines


def study_table(trials: list[dict]) -> list[str]:
    lines = ["| trial | B | lr | status | steps | examples/s | MFU | val accuracy | wall s | "
             "fixed cost s |", "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for t in sorted(trials, key=lambda t: t.get("optuna_trial_number") or 0):
        lines.append(
            f"| {t.get('optuna_trial_number')} | {t.get('batch_size')} | "
            f"{_num(t.get('learning_rate'), '.3g')} | {t.get('status')} | {t.get('steps')} | "
            f"{_num(t.get('throughput'))} | {_num(t.get('mfu'), '.3f')} | "
            f"{_num(t.get('final_val_accuracy'), '.4f')} | {_num(t.get('wall_seconds'), '.1f')} "
            f"| {_num(t.get('fixed_cost_seconds'), '.1f')} |")
    return lines


def markdown(args: argparse.Namespace, device_name: str, settings: GpuSettings,
             speeds: list[Speed], trials: list[dict], data_note: str) -> str:
    placement = "on the GPU" if settings.data_on_device else \
        "in pinned host memory" if settings.pin_memory else "in host memory"
    head = [
        f"### {device_name}: `scripts/gpu_check.py` ({datetime.date.today().isoformat()})",
        "",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or '-'}), one GPU. CIFAR-10 "
        f"{args.model} (BatchNorm), SGD momentum 0.9, random crop + flip; {data_note}. "
        f"bf16 autocast: {'on' if settings.bf16 else 'off'}, channels_last: "
        f"{'on' if settings.channels_last else 'off'}, TF32: {'on' if settings.tf32 else 'off'}, "
        f"torch.compile: {'on' if settings.compile else 'off'}, data {placement}. "
        f"{args.steps} warm-up steps, then {args.steps} timed steps; the loop is "
        "`run_training` (no Ray), the bare loop the same work in plain torch, same process.",
        "",
    ]
    study = ["", f"A {args.trials}-trial study through the runner (`run_study`, 1 GPU per "
             f"trial, {args.study_epochs:g} epoch(s) per trial):", "", *study_table(trials)]
    return "\n".join([*head, *speed_table(speeds), *study, ""])


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
            data_note = f"generated random data ({n[0]:,} training images)"
        else:
            data_dir = args.cifar_dir.expanduser().resolve()
            data_note = f"CIFAR-10 from {data_dir}"
        os.environ[cifar.DIR_ENV] = str(data_dir)  # before Ray starts: trials inherit it
        if args.limit is not None:
            os.environ[cifar.LIMIT_ENV] = str(args.limit)
        try:
            n_train = len(cifar.WORKLOAD.load_data(0).x_train)
            speeds, settings = measure_speeds(args, device, n_train)
            run_dir = args.run_dir or Path(tmp) / "study"
            trials = run_the_study(args, run_dir)
        except UserError as exc:
            print(f"gpu_check: {exc}", file=sys.stderr)
            return 2
        print(f"\n{name}\n")
        print("\n".join(speed_table(speeds)))
        print("\n".join(["", *study_table(trials)]))
        text = markdown(args, name, settings, speeds, trials, data_note)
    args.out.write_text(text)
    print(f"\nMarkdown for BENCHMARKS.md written to {args.out}"
          + ("" if args.run_dir else " (the study's run directory was temporary)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
