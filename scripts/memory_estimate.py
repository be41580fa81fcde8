"""The seed-001 memory estimate against the measured peak, per micro-batch, on CPU.

    python scripts/memory_estimate.py [--model cnn] [--norm batch] [--optimizer sgd]
        [--micro-batches 16,64,256,1024] [--memory-mib 64]

For each micro-batch a fresh process builds the digits model and optimizer, reads its
resident set (VmRSS), resets the peak (``/proc/self/clear_refs``), runs one training step
(forward, backward, optimizer step) and reads the peak (VmHWM): measured = peak - resident
before the step, which holds the parameters already, so it is set against the estimate's
gradients + optimizer state + activations x micro-batch (``lbt_study.train.memory``). Prints
both, their ratio, and the largest micro-batch the estimate predicts for --memory-mib.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r'''
import json, sys, torch
from lbt_study.train.config import TrainConfig
from lbt_study.train.memory import estimate_memory
from lbt_study.train.optim import make_optimizer
from lbt_study.train.setup import build_model
from lbt_study.train.workload import get_workload

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

args = json.loads(sys.argv[1])
torch.set_num_threads(1)
m = args["micro"]
cfg = TrainConfig(workload="digits", model=args["model"], norm=args["norm"], batch_size=m,
                  ghost_batch_size=16 if args["norm"] == "ghost_batch" else None,
                  optimizer=args["optimizer"], lr=0.01)
w = get_workload("digits")
model = build_model(cfg, w, torch.device("cpu"))
data = w.load_data(0)
x = data.x_train[:1].repeat(m, *[1] * (data.x_train.dim() - 1)).contiguous()
y = data.y_train[:1].repeat(m)
est = estimate_memory(model, cfg.optimizer, cfg.momentum, x[:min(m, 32)].clone(),
                      y[:min(m, 32)].clone(), w.loss)
opt = make_optimizer(cfg.optimizer, model.parameters(), lr=0.01, momentum=cfg.momentum,
                     weight_decay=0.0, trust_coefficient=cfg.trust_coefficient)
model.train()
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
w.loss(model(x), y).backward()
opt.step()
peak = status("VmHWM")
print(json.dumps({"micro": m, "measured": peak - before,
                  "estimated": est.at(m) - est.parameters, "fixed": est.fixed,
                  "per_example": est.activations_per_example,
                  "largest": est.largest_micro_batch(args["memory"])}))
'''


def measure(model: str, norm: str, optimizer: str, micro: int, memory: float) -> dict:
    args = json.dumps({"model": model, "norm": norm, "optimizer": optimizer, "micro": micro,
                       "memory": memory})
    out = subprocess.run([sys.executable, "-c", CHILD, args], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--norm", default="batch")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--micro-batches", default="16,64,256,1024")
    p.add_argument("--memory-mib", type=float, default=64.0)
    args = p.parse_args(argv)
    memory = args.memory_mib * 2**20
    print(f"digits {args.model}, norm {args.norm}, {args.optimizer}; MiB")
    print("micro-batch | estimated (grads + state + activations) | measured peak - resident "
          "| measured / estimated")
    rows = []
    for micro in (int(m) for m in args.micro_batches.split(",")):
        r = measure(args.model, args.norm, args.optimizer, micro, memory)
        rows.append(r)
        print(f"{micro} | {r['estimated'] / 2**20:.2f} | {r['measured'] / 2**20:.2f} | "
              f"{r['measured'] / r['estimated']:.2f}")
    slope, offset = np.polyfit([r["micro"] for r in rows], [r["measured"] for r in rows], 1)
    print(f"measured = {offset / 2**20:.2f} MiB + {slope / 1024:.1f} KiB x micro-batch "
          f"(least squares); estimated per example {r['per_example'] / 1024:.1f} KiB, "
          f"measured / estimated {slope / r['per_example']:.2f}; by the measured line "
          f"{int((memory - offset - r['fixed']) // slope)} examples fit {args.memory_mib:g} MiB")
    print(f"fixed (parameters + gradients + state) {r['fixed'] / 2**20:.3f} MiB; activations "
          f"{r['per_example'] / 1024:.1f} KiB per example; largest micro-batch for "
          f"{args.memory_mib:g} MiB by the estimate: {r['largest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
