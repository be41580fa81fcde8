"""Fixed cost per trial: wall time minus training and evaluation, by launch path.

Runs three small studies on a local Ray (near-zero training work per trial) and reports the
median fixed cost per trial for
  - 1 worker, trained inside the Tune trial process (launcher=auto, the default),
  - 1 worker through a Ray Train TorchTrainer (launcher=ray_train),
  - 2 workers through a Ray Train TorchTrainer (DDP, gloo).

    python scripts/trial_overhead.py [--trials 4] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study

CASES = {
    "1 worker, in the trial process": {"workers": 1, "launcher": "auto"},
    "1 worker, Ray Train TorchTrainer": {"workers": 1, "launcher": "ray_train"},
    "2 workers, Ray Train TorchTrainer": {"workers": 2, "launcher": "auto"},
}


def space(trial):
    return {"lr": trial.suggest_float("lr", 0.01, 0.1, log=True)}


def measure(name: str, fixed: dict, trials: int, num_cpus: int, root: Path) -> dict:
    study = Study(name="overhead", space=space, trials=trials,
                  fixed={"batch_size": 64, "model": "mlp", "norm": "none", "epochs": 0.1,
                         **fixed})
    checked = check_study(study)
    run_dir = root / name.replace(" ", "_").replace(",", "")
    run_dir.mkdir()
    t0 = time.perf_counter()
    run_study(study, run_dir, checked.workload.objective_direction, num_cpus=num_cpus,
              max_trial_cpus=checked.max_trial_cpus, progress=lambda line: None)
    study_seconds = time.perf_counter() - t0  # includes starting and stopping Ray
    trials_df, _ = load_results(run_dir)
    ok = trials_df[trials_df["status"] == "ok"]
    return {"case": name, "trials": len(ok),
            "fixed_cost_median_s": ok["fixed_cost_seconds"].median(),
            "wall_median_s": ok["wall_seconds"].median(),
            "train_plus_eval_median_s": (ok["train_seconds"] + ok["eval_seconds"]).median(),
            "study_seconds_per_trial": study_seconds / trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, fixed, args.trials, args.num_cpus, Path(tmp))
                for name, fixed in CASES.items()]
    base = rows[0]["fixed_cost_median_s"]
    print(f"{'case':36} {'trials':>6} {'fixed cost (s)':>15} {'wall (s)':>9} "
          f"{'study s/trial':>14} {'fixed cost / in-process':>24}")
    for r in rows:
        print(f"{r['case']:36} {r['trials']:>6} {r['fixed_cost_median_s']:>15.2f} "
              f"{r['wall_median_s']:>9.2f} {r['study_seconds_per_trial']:>14.2f} "
              f"{r['fixed_cost_median_s'] / base:>24.1f}")


if __name__ == "__main__":
    main()
