"""Study efficiency with 1- and 2-worker trials mixed: one trial at a time against every CPU busy.

The same fixed list of trials (digits MLP; ``--one`` 1-worker trials and ``--two`` 2-worker
trials, in a fixed order) runs twice on a local Ray with ``--num-cpus`` CPUs: with
``max_concurrent_trials=1`` (what lbt-study did before, when a space could give a 2-worker
trial on 2 CPUs) and with the default (one trial per CPU; no trial starts while an earlier
one waits). Prints each run's wall time and study efficiency (Σ training CPU-seconds /
(wall x CPUs)) and the most trials that ran at once.

    python scripts/mixed_study.py [--one 8] [--two 2] [--epochs 20] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from lbt_study import Study, load_results
from lbt_study.study.driver import efficiency_line, run_study
from lbt_study.study.preflight import check_study


def space(trial):
    workers = trial.suggest_categorical("workers", [1, 2])
    return {"workers": workers, "seed": trial.suggest_int("seed", 0, 1000)}


def points(one: int, two: int) -> list[dict]:
    """The 2-worker trials spread through the list, as a search would draw them."""
    out = [{"workers": 1, "seed": s} for s in range(one)]
    for k in range(two):
        out.insert((k + 1) * len(out) // (two + 1), {"workers": 2, "seed": 100 + k})
    return out


def run(max_concurrent: int | None, args: argparse.Namespace, root: Path) -> dict:
    trials = points(args.one, args.two)
    study = Study(name="mixed", space=space, trials=len(trials), initial_points=trials,
                  max_concurrent_trials=max_concurrent,
                  fixed={"model": "mlp", "norm": "layer", "batch_size": 16, "lr": 0.05,
                         "epochs": args.epochs, "eval_every_examples": 5000})
    checked = check_study(study)
    run_dir = root / f"max_{max_concurrent}"
    run_dir.mkdir()
    t0 = time.time()
    run_study(study, run_dir, "maximize", num_cpus=args.num_cpus,
              max_trial_cpus=checked.max_trial_cpus, progress=lambda line: None)
    wall = time.time() - t0
    table, _ = load_results(run_dir)
    return {"max_concurrent_trials": max_concurrent or "default (one per CPU)",
            "ok": int((table["status"] == "ok").sum()), "wall_s": round(wall, 1),
            "at_once": most_at_once(table),
            "efficiency": efficiency_line(table.to_dict("records"), wall, args.num_cpus)}


def most_at_once(table: pd.DataFrame) -> int:
    events = sorted([(t, 1) for t in table["started_at"]] +
                    [(t, -1) for t in table["finished_at"]])
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, default=8)
    parser.add_argument("--two", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(limit, args, Path(tmp)) for limit in (1, None)]
    for row in rows:
        print(row)
    print(f"wall, one at a time / every CPU busy: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}")


if __name__ == "__main__":
    main()
