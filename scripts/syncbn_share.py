"""SyncBN's share of the step time under DDP (gloo on CPU, nccl on GPU): the same 2-worker
trials with BatchNorm (each worker's own statistics) and SyncBN (statistics all-reduced in
every forward), side by side in one study.

    python scripts/syncbn_share.py [--batch-sizes 64,256] [--workers 2] [--num-cpus 2]

Prints, per batch size, the median step time of each norm (``step_time_median`` over the
run), and SyncBN's share: (SyncBN - BatchNorm) / SyncBN, the part of its step its
statistics' all-reduce costs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

SPEC = '''
from lbt_study import Study


def space(trial):
    return {{"lr": trial.suggest_categorical("lr", [0.05])}}


study = Study(name="syncbn_share", workload="digits", space=space, protocol="per_batch_size",
              batch_sizes={sizes!r}, norms=["batch", "sync_batch"], trials=1,
              fixed={{"model": "cnn", "workers": {workers}, "optimizer": "sgd",
                     "momentum": 0.9, "epochs": 3, "seed": 0, "precise_bn": False,
                     "gns_probe_examples": 0}})
'''


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        spec, run = Path(d) / "spec.py", Path(d) / "run"
        spec.write_text(SPEC.format(sizes=sizes, workers=args.workers))
        subprocess.run([sys.executable, "-m", "lbt_study.cli", "run", str(spec), "--run-dir",
                        str(run), "--num-cpus", str(args.num_cpus), "--no-report"],
                       check=True, stdout=subprocess.DEVNULL)
        trials = pd.read_parquet(run / "trials.parquet")
    ok = trials[trials["status"] == "ok"]
    wide = ok.pivot_table(index="batch_size", columns="norm", values="step_time_median")
    wide["syncbn_share"] = (wide["sync_batch"] - wide["batch"]) / wide["sync_batch"]
    print(f"{args.workers} workers, median step time (s) over the run")
    print(wide.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
