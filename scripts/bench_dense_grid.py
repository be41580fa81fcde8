"""A dense-evaluation grid through lbt-study and through a bare torch loop, side by side.

The same N one-worker runs (digits MLP, SGD with momentum, batch sizes x learning rates x
seeds, evaluation every 5 steps on the validation set and the fixed training subset) are run
once as a study (`lbt-study run`, local Ray, one trial per CPU) and once as a bare torch loop
(a process pool, one process per CPU, one thread each), and the wall times compared. From the
study's trials table it also reports the fixed cost per trial and the per-evaluation overhead
(trial wall - training - evaluation, divided by evaluations).

    python scripts/bench_dense_grid.py [--batch-sizes 8,16,32,64,128,256] [--lrs 0.03,0.1]
        [--seeds 0] [--epochs 2] [--num-cpus 2] [--extra '{"stop_at_target": true}']
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = '''
from lbt_study import Study

GRID = {grid!r}
EVAL_STEPS = {eval_steps}


def space(trial):
    b = trial.suggest_categorical("batch_size", sorted({{g["batch_size"] for g in GRID}}))
    return {{"batch_size": b, "eval_every_examples": EVAL_STEPS * b,
             "lr": trial.suggest_categorical("lr", sorted({{g["lr"] for g in GRID}})),
             "seed": trial.suggest_categorical("seed", sorted({{g["seed"] for g in GRID}}))}}


study = Study(name="dense_grid", workload="digits", space=space, trials=len(GRID),
              initial_points=GRID, sampler="random",
              fixed={fixed!r})
'''

FIXED = {"model": "mlp", "norm": "none", "optimizer": "sgd", "momentum": 0.9,
         "schedule": "cosine", "warmup_epochs": 0.0, "measure_flops": False,
         # like for like with the bare loop, which measures no noise scale (the probe costs
         # ~70 ms per evaluation on this MLP: BENCHMARKS.md, "What an evaluation costs")
         "gns_probe_examples": 0}


def grid(args: argparse.Namespace) -> list[dict]:
    return [{"batch_size": b, "lr": lr, "seed": s} for b in args.batch_sizes
            for lr in args.lrs for s in args.seeds]


def run_tool(points: list[dict], args: argparse.Namespace, root: Path) -> tuple[float, Path]:
    spec = root / "dense_grid_spec.py"
    fixed = {**FIXED, "epochs": args.epochs, "workers": args.workers, **args.extra}
    spec.write_text(SPEC.format(grid=points, eval_steps=args.eval_steps, fixed=fixed))
    run_dir = root / "run"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lbt_study.cli", "run", str(spec), "--run-dir",
                    str(run_dir), "--num-cpus", str(args.num_cpus), "--no-report"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, run_dir


def bare_run(job: tuple[dict, int, float, int]) -> int:
    """One run of the bare loop: same model, data, optimizer, schedule, evaluations."""
    import torch

    from lbt_study.train.norms import NormSpec
    from lbt_study.train.workload import get_workload

    point, eval_steps, epochs, _ = job
    torch.set_num_threads(1)
    workload = get_workload("digits")
    data = workload.load_data(point["seed"])
    b, n = point["batch_size"], len(data.x_train)
    steps = math.ceil(epochs * n / b)
    torch.manual_seed(point["seed"])
    model = workload.make_model("mlp", NormSpec("none"))
    opt = torch.optim.SGD(model.parameters(), lr=point["lr"], momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(point["seed"])
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(epochs) + 1)])
    sub = torch.randperm(n, generator=gen)[:512]
    for step in range(1, steps + 1):
        idx = order[(step - 1) * b: step * b]
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_steps == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                for x, y in ((data.x_train[sub], data.y_train[sub]), (data.x_val, data.y_val)):
                    out = model(x)
                    torch.nn.functional.cross_entropy(out, y).item()
                    (out.argmax(1) == y).float().mean().item()
    return steps


def run_bare(points: list[dict], args: argparse.Namespace) -> float:
    jobs = [(p, args.eval_steps, args.epochs, i) for i, p in enumerate(points)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.num_cpus) as pool:
        pool.map(bare_run, jobs, chunksize=1)
    return time.perf_counter() - t0


def summarise(run_dir: Path) -> dict:
    from lbt_study import load_results

    trials, _ = load_results(run_dir)
    fixed = trials["wall_seconds"] - trials["train_seconds"] - trials["eval_seconds"]
    per_eval_ms = 1000 * fixed / trials["evaluations"]
    out = {"trials": len(trials), "ok": int((trials["status"] == "ok").sum()),
           "train_s": trials["train_seconds"].sum(), "eval_s": trials["eval_seconds"].sum(),
           "wall_s": trials["wall_seconds"].sum(), "steps": int(trials["steps"].sum()),
           "evaluations": int(trials["evaluations"].sum()),
           "fixed_median_s": fixed.median(), "per_eval_ms_median": per_eval_ms.median()}
    if "stopped_at_target" in trials:
        out["stopped_at_target"] = int(trials["stopped_at_target"].fillna(False).sum())
    reached = trials[trials["reached_target"].fillna(False).astype(bool)]
    frontier = reached.groupby("batch_size")["steps_to_target"].min()
    out["steps_to_target_frontier"] = {int(b): int(v) for b, v in frontier.items()}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--batch-sizes", type=ints, default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--lrs", type=floats, default=[0.03, 0.1])
    p.add_argument("--seeds", type=ints, default=[0])
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--eval-steps", type=int, default=5)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--workers", type=int, default=1,
                   help="workers per trial (2: DDP trials; the bare loop stays 1 process)")
    p.add_argument("--no-bare", action="store_true", help="run the study only")
    p.add_argument("--extra", type=json.loads, default={},
                   help="more fixed settings for the study, as JSON")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the study's run directory here and render its report "
                        "(B_crit under both crossing rules: report.md, section critical)")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    points = grid(args)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tool_s, run_dir = run_tool(points, args, args.keep or Path(d))
        bare_s = math.nan if args.no_bare else run_bare(points, args)
        stats = summarise(run_dir)
        if args.keep:
            subprocess.run([sys.executable, "-m", "lbt_study.cli", "report", str(run_dir)],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"report: {run_dir / 'report' / 'report.md'}")
    print(f"{len(points)} runs of {args.workers} worker(s), evaluation every {args.eval_steps} "
          f"steps, {args.num_cpus} CPUs, extra settings {args.extra}")
    print(f"tool (lbt-study run) wall: {tool_s:.1f} s; bare torch loop wall: {bare_s:.1f} s; "
          f"tool / bare = {tool_s / bare_s:.2f}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in stats.items()}))


if __name__ == "__main__":
    main()
