"""Is the training loop inside a Ray worker as fast as a bare torch loop?

Side by side in one run, on the same model (digits CNN, BatchNorm), per-worker batch, optimizer
and thread count, training examples per second over optimizer steps only:
  - bare: a minimal torch loop (index a tensor, forward, loss, backward, step);
  - lbt-study in a Ray Train worker (TorchTrainer, 1 worker; launcher=ray_train);
  - lbt-study in a Tune trial's own process (launcher=auto, the default for 1 worker);
  - lbt-study called directly (no Ray).
Each is repeated ``--repeats`` times, interleaved; medians are reported.

    python scripts/hot_loop.py [--batch-size 128] [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lbt_study import Study, load_results
from lbt_study.config import TrainConfig
from lbt_study.norms import NormSpec
from lbt_study.preflight import check_study
from lbt_study.runner import run_study
from lbt_study.train import run_training
from lbt_study.workload import get_workload


def bare_loop(batch_size: int, steps: int, lr: float) -> float:
    """Examples/s of a minimal loop on the same model and data."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = get_workload("digits").load_data(0)
    model = get_workload("digits").make_model("cnn", NormSpec("batch"))
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


def config(batch_size: int, steps: int, lr: float) -> dict:
    return {"model": "cnn", "norm": "batch", "batch_size": batch_size, "lr": lr,
            "epochs": steps * batch_size / 1437, "eval_every_examples": 10**9,
            "schedule": "constant", "measure_flops": False}


def direct(batch_size: int, steps: int, lr: float) -> float:
    rows = []
    run_training(TrainConfig(**config(batch_size, steps, lr)), rows.append)
    return rows[-1]["examples_seen"] / rows[-1]["train_seconds"]


def in_ray(batch_size: int, steps: int, lr: float, launcher: str, root: Path) -> float:
    def space(trial):
        return {"seed": trial.suggest_categorical("seed", [0])}

    study = Study(name="hot", space=space, trials=1,
                  fixed={**config(batch_size, steps, lr), "launcher": launcher})
    checked = check_study(study)
    run_dir = Path(tempfile.mkdtemp(dir=root))
    run_study(study, run_dir, "maximize", num_cpus=2, max_trial_cpus=checked.max_trial_cpus,
              progress=lambda line: None)
    trials, _ = load_results(run_dir)
    return float(trials.loc[0, "throughput"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    b, s, lr = args.batch_size, args.steps, 0.05
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, fn in (
                ("bare torch loop", lambda: bare_loop(b, s, lr)),
                ("lbt-study, Ray Train worker", lambda: in_ray(b, s, lr, "ray_train", Path(tmp))),
                ("lbt-study, Tune trial process", lambda: in_ray(b, s, lr, "auto", Path(tmp))),
                ("lbt-study, no Ray", lambda: direct(b, s, lr)),
            ):
                results.setdefault(name, []).append(fn())
    base = statistics.median(results["bare torch loop"])
    print(f"digits CNN, BatchNorm, batch {b}, {s} steps, 1 thread, {args.repeats} repeats")
    print(f"{'loop':32} {'examples/s (median)':>20} {'all runs':>30} {'/ bare':>7}")
    for name, values in results.items():
        med = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:32} {med:>20.0f} {runs:>30} {med / base:>7.3f}")


if __name__ == "__main__":
    main()
