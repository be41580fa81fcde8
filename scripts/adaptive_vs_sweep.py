"""An adaptive study against the full per-batch-size sweep it replaces, side by side.

Runs ``lbt-study run`` on the full sweep spec and on the adaptive spec (by default the digits
pair: ``search_spaces/digits.py``, 5 trials at each of 7 batch sizes, and
``search_spaces/digits_adaptive.py``, rounds until B_crit's relative width <= 1.0), one after
the other on the same machine, then computes for both, from their tables and with the same
analysis settings the report uses: B_crit and its bootstrap interval, the relative width, the
trials, the examples and the training seconds spent, and the wall time. ``--sweep-dir`` /
``--adaptive-dir`` reuse run directories already made instead of running again.

    python scripts/adaptive_vs_sweep.py [--sweep search_spaces/digits.py]
        [--adaptive search_spaces/digits_adaptive.py] [--root /tmp/adaptive_vs_sweep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from lbt_study import load_results
from lbt_study.analysis.adaptive import interval_state
from lbt_study.analysis.summary import AnalysisSettings
from lbt_study.records.record import StudyRecord


def run(spec: str, run_dir: Path) -> float:
    """Wall seconds of ``lbt-study run spec --run-dir run_dir`` (its output passed through)."""
    start = time.perf_counter()
    subprocess.run(["lbt-study", "run", spec, "--run-dir", str(run_dir)], check=True)
    return time.perf_counter() - start


def measure(run_dir: Path, wall: float | None) -> dict:
    """The interval and the compute of one run directory."""
    trials, _ = load_results(run_dir)
    direction = (StudyRecord.raw(run_dir) or {})["objective_direction"]
    s = AnalysisSettings()
    state = interval_state(trials, direction, n_boot=s.n_boot, seed=s.seed, ci=s.ci,
                           statuses=s.frontier_statuses)
    per_b = trials.groupby("batch_size").size()
    return {
        "trials": len(trials),
        "trials per B": " ".join(f"{int(b)}:{n}" for b, n in per_b.items()),
        "pruned": int((trials["status"] == "pruned").sum()),
        "B_crit": round(state["b_crit"], 1),
        "interval": f"[{state['lower']:.1f}, {state['upper']:.1f}]",
        "rel_width": round(state["rel_width"], 3),
        "examples": int(pd.to_numeric(trials["examples_seen"]).sum()),
        "train_seconds": round(float(pd.to_numeric(trials["train_seconds"]).sum()), 1),
        "wall_seconds": None if wall is None else round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default="search_spaces/digits.py")
    p.add_argument("--adaptive", default="search_spaces/digits_adaptive.py")
    p.add_argument("--root", type=Path, default=Path("/tmp/adaptive_vs_sweep"))
    p.add_argument("--sweep-dir", type=Path, help="a finished run of the sweep spec")
    p.add_argument("--adaptive-dir", type=Path, help="a finished run of the adaptive spec")
    args = p.parse_args(argv)
    rows = {}
    for name, spec, given in (("full sweep", args.sweep, args.sweep_dir),
                              ("adaptive", args.adaptive, args.adaptive_dir)):
        run_dir = given or args.root / name.replace(" ", "_")
        wall = None if given else run(spec, run_dir)
        rows[name] = measure(run_dir, wall)
    table = pd.DataFrame(rows)
    ratio = {k: rows["adaptive"][k] / rows["full sweep"][k]
             for k in ("trials", "examples", "train_seconds", "rel_width")
             if rows["full sweep"][k]}
    table["adaptive / sweep"] = pd.Series({k: round(v, 3) for k, v in ratio.items()})
    print(table.astype(object).fillna("").to_string())
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
