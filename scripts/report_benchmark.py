"""Time ``write_report`` on a synthetic run directory with a large history table.

    python scripts/report_benchmark.py                 # 1,000 trials x 100 evaluations
    python scripts/report_benchmark.py --trials 200 --evals 50 --repeats 1

The run directory is generated (``synthetic_run``): trials at seven batch sizes and four
normalizations, statuses ok / pruned / diverged / oom / failed, learning rates around a
square-root rule, accuracy curves whose time constant in steps follows McCandlish et al.'s
S_min (1 + B_crit / B), a gradient noise scale for the 2-worker trials, and the at-target
columns measured from the history with ``time_to_target`` (as the runner does). Prints the
history rows, the median seconds of ``--repeats`` runs, and whether it is under 5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lbt_study.analysis import time_to_target
from lbt_study.records.results import HISTORY_COLUMNS, TRIALS_COLUMNS, write_table
from lbt_study.report import write_report

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
NORMS = ("batch", "ghost_batch", "layer", "group")
STATUSES = ("ok", "pruned", "diverged", "oom", "failed")
STATUS_WEIGHTS = (0.80, 0.08, 0.05, 0.03, 0.04)
TARGET, TRAIN_EXAMPLES, EPOCHS = 0.9, 50_000, 10
S_MIN, B_CRIT = 400.0, 256.0  # planted McCandlish curve of the accuracy time constant


def synthetic_trials(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Trial configs and statuses (no results yet): one row per trial."""
    batch = rng.choice(BATCH_SIZES, n)
    norm = rng.choice(NORMS, n)
    workers = np.where(rng.random(n) < 0.5, 2, 1)
    lr = 0.01 * np.sqrt(batch / 16) * np.exp(rng.normal(0, 0.8, n))
    status = rng.choice(STATUSES, n, p=STATUS_WEIGHTS)
    return pd.DataFrame({
        "trial_id": [f"t{i:05d}" for i in range(n)], "optuna_trial_number": np.arange(n),
        "status": status, "error": np.where(status == "failed", "RuntimeError: worker died",
                                            None),
        "workload": "synthetic", "model": "cnn", "norm": norm, "batch_size": batch,
        "workers": workers, "accumulation_steps": 1, "optimizer": "sgd", "lr": lr,
        "learning_rate": lr, "momentum": 0.9, "warmup_epochs": rng.uniform(0, 2, n),
        "schedule": "cosine", "epochs": EPOCHS, "seed": 0,
        "micro_batch_size": batch // workers,
        "total_steps": np.ceil(EPOCHS * TRAIN_EXAMPLES / batch).astype(int),
    })


def synthetic_history(trials: pd.DataFrame, evals: int, rng: np.random.Generator
                      ) -> pd.DataFrame:
    """``evals`` evaluations per trial, built with array operations (no per-trial loop)."""
    n = len(trials)
    batch = np.repeat(trials["batch_size"].to_numpy(), evals).astype(float)
    total = np.repeat(trials["total_steps"].to_numpy(), evals)
    frac = np.tile(np.linspace(0, 1, evals), n)
    step = np.round(frac * total).astype(int)
    lr = np.repeat(trials["learning_rate"].to_numpy(), evals)
    miss = np.abs(np.log(lr / (0.01 * np.sqrt(batch / 16))))
    tau = S_MIN * (1 + B_CRIT / batch) * (1 + miss) / 3
    final = 0.99 - 0.04 * miss - 0.002 * np.log2(batch / 16)
    val_acc = final * (1 - np.exp(-step / tau)) + rng.normal(0, 0.003, n * evals)
    train_acc = np.minimum(val_acc + 0.01 + 0.005 * np.log2(batch / 16), 1.0)
    val_loss, train_loss = -np.log(np.clip(val_acc, 0.05, 0.999)), -np.log(
        np.clip(train_acc, 0.05, 0.999))
    two = np.repeat(trials["workers"].to_numpy() == 2, evals)
    throughput = 2000 * batch ** 0.4 * np.where(two, 1.6, 1.0)
    return pd.DataFrame({
        "trial_id": np.repeat(trials["trial_id"].to_numpy(), evals), "step": step,
        "examples_seen": step * batch.astype(int), "epoch": step * batch / TRAIN_EXAMPLES,
        "train_seconds": step * batch / throughput, "lr": lr, "minibatch_loss": train_loss,
        "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
        "val_accuracy": val_acc, "gap_loss": val_loss - train_loss,
        "gap_accuracy": train_acc - val_acc, "throughput": throughput,
        "world_size": np.where(two, 2, 1),
        "gns_simple": np.where(two, B_CRIT * (0.3 + frac) * rng.lognormal(0, 0.1, n * evals),
                               np.nan),
        "objective": val_acc,
    })


def finish_trials(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Final metrics and at-target columns from the history (as the results writer does)."""
    last = history.groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    out = trials.set_index("trial_id")
    for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap_loss",
                   "gap_accuracy", "objective"):
        out[f"final_{metric}"] = last[metric]
    out["best_objective"] = history.groupby("trial_id")["objective"].max()
    out["final_gns_simple"] = last["gns_simple"]
    out["steps"], out["examples_seen"] = last["step"], last["examples_seen"]
    out["train_seconds"] = last["train_seconds"]
    out["throughput"] = out["examples_seen"] / out["train_seconds"]
    out["wall_seconds"] = out["train_seconds"] * 1.3 + 2.0
    at = time_to_target(history, TARGET, "maximize").set_index("trial_id")
    out["target"], out["reached_target"] = TARGET, at["reached"]
    for column in ("steps_to_target", "examples_to_target", "seconds_to_target",
                   "gap_accuracy_at_target", "gap_loss_at_target"):
        out[column] = at[column]
    return out.reset_index().reindex(columns=list(TRIALS_COLUMNS))


def synthetic_run(run_dir: Path, n_trials: int = 1000, evals: int = 100, seed: int = 0,
                  name: str = "synthetic") -> Path:
    """Write a run directory (trials, history, study.json) and return it."""
    rng = np.random.default_rng(seed)
    trials = synthetic_trials(n_trials, rng)
    history = synthetic_history(trials, evals, rng)
    trials = finish_trials(trials, history)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_table(history.reindex(columns=list(HISTORY_COLUMNS)), run_dir, "history")
    write_table(trials, run_dir, "trials")
    meta = {"name": name, "workload": "synthetic", "trials": n_trials, "fixed": {"epochs": EPOCHS},
            "objective_direction": "maximize", "target": TARGET, "asha": None,
            "created": "2026-01-01T00:00:00"}
    (run_dir / "study.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Generate the run, time write_report, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = synthetic_run(Path(tmp) / "run", args.trials, args.evals)
        rows = len(pd.read_parquet(run_dir / "history.parquet"))
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            write_report(run_dir)
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(f"history rows: {rows:,} ({args.trials} trials x {args.evals} evaluations)")
    print(f"write_report: median {median:.2f} s of {args.repeats} "
          f"({', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"under 5 s: {'yes' if median < 5 else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
