"""Validation accuracy with BatchNorm's running statistics vs recomputed ones (precise BN).

The same training twice (precise BN restores the buffers, so both runs take identical steps:
the script checks it), evaluated at every step, once with ``precise_bn=False`` (the EMA
buffers training leaves, momentum 0.1) and once with the statistics recomputed on 1,024
training examples before each evaluation.

    python scripts/precise_bn.py [--batch-size 1024] [--epochs 8] [--lr 0.03]
"""

from __future__ import annotations

import argparse

import torch

from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--epochs", type=float, default=8.0)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--model", default="cnn")
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = dict(model=args.model, norm="batch", batch_size=args.batch_size, lr=args.lr,
                epochs=args.epochs, eval_schedule="uniform",
                eval_every_examples=args.batch_size, measure_gns=False, probe_memory=False)
    rows = {}
    for precise in (False, True):
        got: list[dict] = []
        run_training(TrainConfig(**base, precise_bn=precise), got.append)
        rows[precise] = got
    same = [r["minibatch_loss"] for r in rows[True][1:]] == \
        [r["minibatch_loss"] for r in rows[False][1:]]
    print(f"digits {args.model}, B={args.batch_size}, lr {args.lr}, {args.epochs:g} epochs; "
          f"identical training in both runs: {same}")
    print("| step | val accuracy, running statistics | val accuracy, precise BN | difference |")
    print("|---:|---:|---:|---:|")
    for stale, fresh in zip(rows[False], rows[True], strict=True):
        a, b = stale["val_accuracy"], fresh["val_accuracy"]
        print(f"| {stale['step']} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")


if __name__ == "__main__":
    main()
