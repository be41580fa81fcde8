"""Helpers for the DDP tests: spawn real gloo workers and collect what they return.

Worker functions live here, in an importable module, because the 'spawn' start method pickles
them by module and name. Each worker's return value is written with ``torch.save`` to
``<out_dir>/rank<r>.pt`` and read back by ``spawn``.
"""

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(fn, out_dir, *args, world_size=WORLD_SIZE):
    """Run ``fn(rank, *args)`` on ``world_size`` processes in one gloo group; their results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mp.start_processes(
        _entry,
        args=(world_size, port, str(out), fn, args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def _entry(rank, world_size, port, out_dir, fn, args):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        result = fn(rank, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def train(config):
    """One ``run_training`` on this process: the trained weights and every reported row."""
    from lbt_study.train import run_training
    from lbt_study.train.config import TrainConfig

    rows = []
    outcome = run_training(TrainConfig(**config), rows.append)
    state = {k: v.detach().clone() for k, v in outcome.model.state_dict().items()}
    return {"state": state, "rows": rows, "status": outcome.status, "steps": outcome.steps}


def train_worker(rank, configs):
    """``train`` for each config in turn; a run that raises gives ``{"error": ...}`` instead,
    so that one failing configuration does not hide the others' results. (A run that raised on
    one rank must raise on every rank, before any collective, or the next run would hang.)"""
    del rank
    results = []
    for config in configs:
        try:
            results.append(train(config))
        except Exception as exc:  # reported to the test, which fails on it
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    return results


def make_sync_batch_norm(channels, dtype=torch.float64):
    """An ``lbt_study`` SyncBatchNorm with fixed, non-trivial affine parameters."""
    from lbt_study.train.norms import SyncBatchNorm

    module = SyncBatchNorm(channels).to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(0.5, 1.5, channels, dtype=dtype))
        module.bias.copy_(torch.linspace(-1.0, 1.0, channels, dtype=dtype))
    return module


def sync_batch_norm_pass(module, x, w):
    """Training forward of ``module`` on x, backward of sum(y * w): outputs and gradients."""
    module.train()
    x = x.detach().clone().requires_grad_()
    y = module(x)
    (y * w).sum().backward()
    return {
        "y": y.detach(),
        "x_grad": x.grad,
        "weight_grad": module.weight.grad,
        "bias_grad": module.bias.grad,
        "running_mean": module.running_mean.clone(),
        "running_var": module.running_var.clone(),
    }


def sync_batch_norm_worker(rank, cases):
    """For each (x, w) of a whole batch: this rank's half through SyncBatchNorm."""
    results = []
    for x, w in cases:
        module = make_sync_batch_norm(x.shape[1])
        results.append(
            sync_batch_norm_pass(module, x.chunk(WORLD_SIZE)[rank], w.chunk(WORLD_SIZE)[rank])
        )
    return results


def gns_worker(rank, config):
    """The last reported row of one run (gradient noise scale columns included)."""
    from lbt_study.train import run_training
    from lbt_study.train.config import TrainConfig

    rows = []
    run_training(TrainConfig(**config), rows.append)
    return {k: v for k, v in rows[-1].items() if isinstance(v, float | int)}


def oom_worker(rank, config, limits):
    """A run where each rank has its own injected memory limit."""
    from lbt_study.train import run_training
    from lbt_study.train.config import TrainConfig

    rows = []
    out = run_training(TrainConfig(**config, fault_oom_above=limits[rank]), rows.append)
    return {"status": out.status, "last": {k: v for k, v in rows[-1].items()
                                           if isinstance(v, float | int)}}
