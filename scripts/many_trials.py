"""A study of many near-zero-work trials: driver memory, wall time, and table load time.

    python scripts/many_trials.py [--trials 300] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study


def space(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 0.3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    study = Study(name="many", space=space, trials=args.trials,
                  fixed={"model": "mlp", "norm": "none", "epochs": 0.02,
                         "train_eval_examples": 64, "measure_flops": False})
    checked = check_study(study)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        t0 = time.perf_counter()
        run_study(study, run_dir, "maximize", num_cpus=args.num_cpus,
                  max_trial_cpus=checked.max_trial_cpus, progress=lambda line: None)
        wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t1 = time.perf_counter()
        trials, history = load_results(run_dir)
        load = time.perf_counter() - t1
    print(f"trials finished: {len(trials)} ({dict(trials['status'].value_counts())}); "
          f"history rows: {len(history)}")
    print(f"study wall time: {wall:.0f} s ({wall / len(trials):.2f} s per trial)")
    print(f"driver peak RSS: {peak_mib:.0f} MiB")
    print(f"load_results: {load:.3f} s")


if __name__ == "__main__":
    main()
