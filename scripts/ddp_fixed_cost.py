"""Where a multi-worker trial's fixed cost goes: a phase-by-phase breakdown.

Runs N trials the way lbt-study runs a 2-worker trial (a Tune function trial that calls a Ray
Train TorchTrainer, gloo, lbt-study's own worker loop and row file) with near-zero training
work, and timestamps every phase from inside: Ray Train's own controller, worker-group and
train-context callbacks (``ray.train.v2`` internals, which ``RunConfig(callbacks=...)``
accepts), the worker loop's entry, the first and last row the trial writes, and the return
of ``fit()``. Prints the median seconds of each phase.

    python scripts/ddp_fixed_cost.py [--trials 3] [--workers 2] [--env K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

PHASES = [
    ("trial_started", "controller_started", "controller actor start (process + imports)"),
    ("controller_started", "group_requested", "controller to worker-group request"),
    ("group_requested", "actors_started", "placement group + worker actors"),
    ("actors_started", "context_ready", "train context on every worker"),
    ("context_ready", "group_started", "process group (torch.distributed, gloo)"),
    ("group_started", "loop_entered", "train function launched on the workers"),
    ("loop_entered", "first_row", "trial setup: data, model, probes, DDP; first evaluation"),
    ("first_row", "last_row", "training and evaluation (the work)"),
    ("last_row", "fit_returned", "last report to fit() return (teardown)"),
    ("fit_returned", "trial_ended", "trial function return"),
]


def _mark(path: str, name: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({name: time.time()}) + "\n")


def _callbacks(path: str) -> list:
    from ray.train.v2._internal.execution.callback import (
        ControllerCallback,
        ExecutionGroupCallback,
        WorkerCallback,
        WorkerGroupCallback,
    )

    class Timing(ControllerCallback, WorkerGroupCallback, ExecutionGroupCallback,
                 WorkerCallback):
        def after_controller_start(self, train_run_context) -> None:
            _mark(path, "controller_started")

        def before_worker_group_start(self, worker_group_context) -> None:
            _mark(path, "group_requested")

        def before_init_train_context(self, workers) -> dict:
            _mark(path, "actors_started")
            return {}

        def after_init_train_context(self) -> None:
            _mark(path, "context_ready")  # on each worker: the last one counts

        def after_worker_group_start(self, worker_group) -> None:
            _mark(path, "group_started")  # after Ray's backend set-up callback

    return [Timing()]


def _timed_loop(config: dict) -> None:
    from lbt_study.records import rowlog
    from lbt_study.study import trial as runner

    path = config["marks"]
    _mark(path, "loop_entered")
    append = rowlog.RowLog.append

    def timed_append(self, row):  # rank 0 writes the rows
        append(self, row)
        _mark(path, "first_row" if row.get("step") == 0 else "last_row")

    rowlog.RowLog.append = timed_append
    runner._worker_loop(config)


def _trial(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from lbt_study.train.config import parse_config

    marks, root = config["marks"], config["root"]
    _mark(marks, "trial_started")
    cfg = parse_config(config["values"])
    tid = tune.get_context().get_trial_id()
    trainer = ray.train.torch.TorchTrainer(
        _timed_loop,
        train_loop_config={"cfg": cfg, "rows_path": f"{root}/rows_{tid}.jsonl", "marks": marks},
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers,
                                               resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"train_{tid}", storage_path=f"{root}/ray",
                                       callbacks=[TuneReportCallback(), *_callbacks(marks)]),
    )
    trainer.fit()
    _mark(marks, "fit_returned")
    tune.report({"done": 1})


def run(trials: int, workers: int, root: Path) -> list[dict[str, float]]:
    from ray import tune

    from lbt_study.study import cluster as runner  # sets Ray's environment before Ray loads

    class TrialEnd(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            _mark(str(root / f"marks_{trial.config['n']}.jsonl"), "trial_ended")

    runner.start_ray(None, workers)
    values = {"model": "mlp", "norm": "layer", "batch_size": 64, "lr": 0.05, "epochs": 0.1,
              "workers": workers}
    space = {"n": tune.grid_search(list(range(trials))), "values": values, "root": str(root)}

    def trial(config: dict) -> None:
        _trial({**config, "marks": str(root / f"marks_{config['n']}.jsonl")})

    tuner = tune.Tuner(
        tune.with_resources(trial, tune.PlacementGroupFactory([{runner.SLOT: workers}])),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(root / "ray"), verbose=0,
                                  callbacks=[TrialEnd()]),
    )
    try:
        tuner.fit()
    finally:
        import ray

        ray.shutdown()
    return [_read(root / f"marks_{n}.jsonl") for n in range(trials)]


def _read(path: Path) -> dict[str, float]:
    marks: dict[str, float] = {}
    for line in path.read_text().splitlines():
        (name, t), = json.loads(line).items()
        if name in ("context_ready", "last_row") or name not in marks:
            marks[name] = t  # the last worker's context, the last row; else the first
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env", action="append", default=[],
                        help="K=V set before Ray starts (repeatable)")
    args = parser.parse_args()
    for pair in args.env:
        key, _, value = pair.partition("=")
        os.environ[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        marks = run(args.trials, args.workers, Path(tmp))
    print(f"{args.workers}-worker trials, {args.trials} runs; median seconds per phase "
          f"(all runs)")
    total = []
    for start, end, what in PHASES:
        spans = [m[end] - m[start] for m in marks if start in m and end in m]
        shown = " ".join(f"{s:6.2f}" for s in spans)
        print(f"  {what:<58} {statistics.median(spans) if spans else float('nan'):6.2f}"
              f"   ({shown})")
    for m in marks:
        total.append(m["trial_ended"] - m["trial_started"]
                     - (m["last_row"] - m["first_row"]))
    print(f"  {'fixed cost: trial start to end, minus the work':<58} "
          f"{statistics.median(total):6.2f}   ({' '.join(f'{t:6.2f}' for t in total)})")


if __name__ == "__main__":
    main()
