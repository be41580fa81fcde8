"""What the measurements cost in one default trial, and the probe's standard error at the
target: the main job's spec (``search_spaces/digits.py``) at one batch size, one thread.

    python scripts/measurement_cost.py [--batch-size 64] [--norm ghost_batch] [--repeats 3]

Runs the same trial with the measurements as configured and with each switched off, and
prints training seconds, evaluation seconds, each measurement's seconds (``*_seconds``), the
number of evaluations and measured probes, and gns_at_target with its standard error.
'before issue 20' is the measurement settings of the previous default (the probe on 1024
examples at every evaluation, precise BN on 1024, every step evaluated early) on this trial.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch

from lbt_study.records.results import trial_record
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def default_values(batch_size: int, norm: str) -> dict:
    """The main job's fixed settings at one batch size, its first QMC point's lr."""
    spec = importlib.util.spec_from_file_location("digits_spec", ROOT / "search_spaces" /
                                                  "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    study = module.study
    fixed = {k: v for k, v in study.fixed.items() if k not in ("cpus_per_worker",)}
    return {**fixed, "workload": study.workload, "batch_size": batch_size, "norm": norm,
            "base_lr": 0.05, "target": 0.95, **({"ghost_batch_size": 16}
                                                 if norm == "ghost_batch" else {})}


def one(values: dict, **over: object) -> dict:
    rows: list[dict] = []
    cfg = TrainConfig(**{**values, **over})
    run_training(cfg, rows.append)
    rec = trial_record("t", values, rows, 0.0, None, "maximize", target=values["target"])
    probes = sum(1 for r in rows if r.get("gns_probe") == r.get("gns_probe"))
    return {"train_s": rec["train_seconds"], "eval_s": rec["eval_seconds"],
            "probe_s": rec["gns_probe_seconds"], "precise_bn_s": rec["precise_bn_seconds"],
            "evaluations": len(rows), "probes": probes, "steps": rec["steps"],
            "gns_at_target": rec["gns_at_target"], "se": rec["gns_probe_se_at_target"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--norm", default="ghost_batch")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    values = default_values(args.batch_size, args.norm)
    cases = {"as configured": {}, "probe off": {"gns_probe_examples": 0},
             "precise BN off": {"precise_bn": False},
             "both off": {"gns_probe_examples": 0, "precise_bn": False},
             "probe at every evaluation": {"gns_probe_schedule": "evaluation"},
             "probe of 1024 examples": {"gns_probe_examples": 1024},
             "before issue 20": {"gns_probe_examples": 1024, "gns_probe_schedule": "evaluation",
                                 "precise_bn_examples": 1024, "eval_first_step": 1}}
    print(f"B={args.batch_size} norm={args.norm}, medians of {args.repeats}")
    for name, over in cases.items():
        runs = [one(values, **over) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        per = (med["eval_s"]) / med["evaluations"] * 1000
        print(f"{name:28s} train {med['train_s']:.3f} s, eval {med['eval_s']:.3f} s "
              f"({per:.1f} ms per evaluation, {med['evaluations']:.0f} evaluations, "
              f"{med['probes']:.0f} probed), probe {med['probe_s']:.3f} s, precise BN "
              f"{med['precise_bn_s']:.3f} s, steps {med['steps']:.0f}, gns_at_target "
              f"{med['gns_at_target']:.4g} +- {med['se']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
