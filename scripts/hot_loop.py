"""Is the training loop inside a Ray worker as fast as a bare torch loop?

Side by side in one run, on the same model (digits CNN with BatchNorm, or the MLP), per-worker
batch, optimizer and thread count, training examples per second over optimizer steps only:
  - bare: a minimal torch loop (index a tensor, forward, loss, backward, step);
  - lbt-study in a Ray Train worker (TorchTrainer, 1 worker; launcher=ray_train);
  - lbt-study in a Tune trial's own process (launcher=auto, the default for 1 worker);
  - lbt-study called directly (no Ray).
Each is repeated ``--repeats`` times, interleaved; medians are reported. ``--loop-only``
compares the bare loop with lbt-study's own steps (``assemble`` + ``timed_step``, the loop
without set-up and evaluations) in this process, with no Ray started: the loop's own cost.

    python scripts/hot_loop.py [--batch-sizes 128] [--models cnn] [--steps 400] [--repeats 3]
        [--no-ray-train] [--loop-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements.active import ActiveMeasurements
from lbt_study.train.norms import NormSpec
from lbt_study.train.setup import assemble
from lbt_study.train.step import timed_step
from lbt_study.train.workload import get_workload

NORM = {"cnn": "batch", "mlp": "batch"}


def bare_loop(model_name: str, batch_size: int, steps: int, lr: float) -> float:
    """Examples/s of a minimal loop on the same model and data."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = get_workload("digits").load_data(0)
    model = get_workload("digits").make_model(model_name, NormSpec(NORM[model_name]))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(0)
    n = len(data.x_train)
    model.train()
    seconds = 0.0
    for _ in range(steps):
        idx = torch.randint(n, (batch_size,), generator=gen)
        t0 = time.perf_counter()
        x, y = data.x_train[idx], data.y_train[idx]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        seconds += time.perf_counter() - t0
    return steps * batch_size / seconds


def config(model: str, batch_size: int, steps: int, lr: float) -> dict:
    return {"model": model, "norm": NORM[model], "batch_size": batch_size, "lr": lr,
            "epochs": steps * batch_size / 1437, "eval_every_examples": 10**9,
            "schedule": "constant", "measure_flops": False}


def direct(model: str, batch_size: int, steps: int, lr: float) -> float:
    rows = []
    run_training(TrainConfig(**config(model, batch_size, steps, lr)), rows.append)
    return rows[-1]["examples_seen"] / rows[-1]["train_seconds"]


def steps_only(model: str, batch_size: int, steps: int, lr: float) -> float:
    """Examples/s of lbt-study's timed steps alone (no Ray, no evaluations)."""
    parts = assemble(TrainConfig(**config(model, batch_size, steps, lr)), torch.device("cpu"))
    measurements = ActiveMeasurements.build(parts)
    seconds = sum(timed_step(parts, parts.schedule.plan_at(s), s, measurements)[1]
                  for s in range(1, steps + 1))
    return steps * batch_size / seconds


def in_ray(model: str, batch_size: int, steps: int, lr: float, launcher: str,
           root: Path) -> float:
    def space(trial):
        return {"seed": trial.suggest_categorical("seed", [0])}

    study = Study(name="hot", space=space, trials=1,
                  fixed={**config(model, batch_size, steps, lr), "launcher": launcher})
    checked = check_study(study)
    run_dir = Path(tempfile.mkdtemp(dir=root))
    run_study(study, run_dir, "maximize", num_cpus=2, max_trial_cpus=checked.max_trial_cpus,
              progress=lambda line: None)
    trials, _ = load_results(run_dir)
    return float(trials.loc[0, "throughput"])


def measure(model: str, b: int, s: int, repeats: int, ray_train: bool,
            tmp: Path, loop_only: bool = False) -> dict[str, list[float]]:
    lr = 0.05
    paths = [("bare torch loop", lambda: bare_loop(model, b, s, lr)),
             ("lbt-study steps, no Ray", lambda: steps_only(model, b, s, lr))] if loop_only \
        else [
        ("bare torch loop", lambda: bare_loop(model, b, s, lr)),
        ("lbt-study, Ray Train worker", lambda: in_ray(model, b, s, lr, "ray_train", tmp)),
        ("lbt-study, Tune trial process", lambda: in_ray(model, b, s, lr, "auto", tmp)),
        ("lbt-study, no Ray", lambda: direct(model, b, s, lr)),
    ]
    if not ray_train and not loop_only:
        paths.pop(1)
    results: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in paths:
            results.setdefault(name, []).append(fn())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",")],
                        default=[128])
    parser.add_argument("--models", type=lambda t: t.split(","), default=["cnn"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--examples", type=int, default=0,
                        help="train at least this many examples per run (more steps at small B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ray-train", action="store_true",
                        help="leave out the Ray Train worker path (seconds of start-up each)")
    parser.add_argument("--loop-only", action="store_true",
                        help="only the bare loop and lbt-study's steps, in this process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for b in args.batch_sizes:
                steps = max(args.steps, args.examples // b)
                results = measure(model, b, steps, args.repeats, not args.no_ray_train,
                                  Path(tmp), args.loop_only)
                _print(model, b, steps, args.repeats, results)


def _print(model: str, b: int, steps: int, repeats: int,
           results: dict[str, list[float]]) -> None:
    base = statistics.median(results["bare torch loop"])
    print(f"digits {model.upper()}, {NORM[model]} norm, batch {b}, {steps} steps, 1 thread, "
          f"{repeats} repeats")
    print(f"{'loop':32} {'examples/s (median)':>20} {'all runs':>30} {'/ bare':>7}")
    for name, values in results.items():
        med = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:32} {med:>20.0f} {runs:>30} {med / base:>7.3f}")


if __name__ == "__main__":
    main()
