"""One Tune trial, on a Ray worker: the trial config parsed once, then the training loop in
the trial's own process (one worker) or a Ray Train ``TorchTrainer`` worker group (DDP:
gloo on CPU, nccl on GPU); rows appended to the trial's row file as they are made and sent
to Tune at a bounded rate; a failed trial's last row says how far it got."""

from __future__ import annotations

import json
import math
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402

from lbt_study.errors import UserError, one_line
from lbt_study.records.results import (  # noqa: E402
    ROWS_KEY,
)
from lbt_study.records.rowlog import RowLog, read_rows  # noqa: E402
from lbt_study.records.rundir import RAY_DIR, trial_rows_path  # noqa: E402
from lbt_study.study.cluster import SLOT  # noqa: E402
from lbt_study.study.spec import (  # noqa: E402
    merge_values,
    space_values,
)
from lbt_study.train import Cadence, Row, run_training  # noqa: E402
from lbt_study.train.config import TrainConfig, parse_config  # noqa: E402
from lbt_study.train.measure import is_out_of_memory  # noqa: E402

Progress = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0

# ---------------------------------------------------------------- trial side (Ray workers)

def _failed_row(exc: BaseException, last: Row | None, cfg: TrainConfig | None) -> Row:
    """A failed trial's last row: how far it got, and the config it ran when it parsed one;
    status ``oom`` when it failed allocating memory (a model too large to place, a step
    larger than the memory probe's)."""
    status = "oom" if is_out_of_memory(exc) else "failed"
    row: Row = {"status": status, "error": one_line(exc), "objective": math.nan,
                "step": (last or {}).get("step", 0),
                "examples_seen": (last or {}).get("examples_seen", 0)}
    if cfg is not None:
        row["config_as_run"] = cfg.model_dump_json()
    return row


STATE_FILE = "state.pt"


def _load_state(checkpoint: Any) -> dict | None:
    """The training state in a Ray checkpoint (tensors and plain values only)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, weights_only=True)


def _with_state(row: Row, state: dict, send: Callable[..., None], checkpoint_cls: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE_FILE)
        send(row, checkpoint=checkpoint_cls.from_directory(d))


def _maybe_fault(cfg: TrainConfig, row: Row, rank: int, name: str) -> None:
    """The ``fault_exit_at_step`` testing aid: the last worker dies once, hard."""
    if cfg.fault_exit_at_step is None or rank != cfg.workers - 1:
        return
    marker = Path(tempfile.gettempdir()) / f"lbt_fault_{name}_{rank}"
    if int(row.get("step") or 0) >= cfg.fault_exit_at_step and not marker.exists():
        marker.touch()
        os._exit(1)


def _worker_nodes() -> str:
    """The Ray node id of every worker, in rank order, as the workers see them."""
    node = ray.get_runtime_context().get_node_id()
    if not torch.distributed.is_initialized():
        return node
    nodes: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, node)
    return ",".join(str(n) for n in nodes)


class _Reports:
    """A worker's reporter and checkpointer for ``run_training``. Rows carry the workers'
    node ids; rank 0 appends each to the trial's row file as it is made (the history's
    source: ``lbt_study.records.rowlog``). They are sent to Tune every ``report_every_s`` seconds
    (agreed by all workers, since every rank must report together), each report with every
    row since the previous; the last row and a checkpoint are sent at once. Rank 0 saves the
    training state."""

    def __init__(self, cfg: TrainConfig, rank: int, name: str, nodes: str,
                 send: Callable[..., None], checkpoint_cls: Any, device: torch.device,
                 rows_path: str) -> None:
        self.cfg, self.rank, self.name, self.nodes = cfg, rank, name, nodes
        self.send, self.checkpoint_cls = send, checkpoint_cls
        self.cadence = Cadence(cfg.report_every_s, device)
        self.pending: list[Row] = []
        self.log = RowLog(rows_path) if rank == 0 else None

    def report(self, row: Row) -> None:
        self._add(row)
        if row["status"] != "running" or self.cadence.due():
            self.send(self._payload())

    def checkpoint(self, row: Row, state: dict) -> None:
        self._add(row)
        if self.rank == 0:
            _with_state(self._payload(), state, self.send, self.checkpoint_cls)
        else:
            self.send(self._payload())

    def flush(self) -> None:
        """Send the rows not sent yet (one worker only: under DDP every rank must report)."""
        if self.pending:
            self.send(self._payload())

    def _add(self, row: Row) -> None:
        row = {**row, "worker_nodes": self.nodes}
        _maybe_fault(self.cfg, row, self.rank, self.name)
        if self.log is not None:
            self.log.append(row)
        self.pending.append(row)

    def _payload(self) -> Row:
        rows, self.pending = self.pending, []
        self.cadence.mark()
        return {**rows[-1], ROWS_KEY: json.dumps(rows)}


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker (the config parsed once, by the trial); resumes from the
    last checkpoint after a failure."""
    cfg: TrainConfig = config["cfg"]
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    reports = _Reports(cfg, ctx.get_world_rank(), ctx.get_experiment_name(), _worker_nodes(),
                       ray.train.report, ray.train.Checkpoint, device, config["rows_path"])
    _set_threads(cfg, device)
    run_training(cfg, report=reports.report, device=device, checkpoint=reports.checkpoint,
                 resume=_load_state(ray.train.get_checkpoint()))


def _set_threads(cfg: TrainConfig, device: torch.device) -> None:
    """A CPU worker computes with the CPUs Ray reserved for it."""
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)


def _train_with_workers(cfg: TrainConfig, storage: str, rows_path: str) -> None:
    trial_id = tune.get_context().get_trial_id()
    use_gpu = cfg.gpus_per_worker > 0
    per_worker = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg, "rows_path": rows_path},
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=per_worker,
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=f"train_{trial_id}", storage_path=storage, callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()


def _train_in_trial(cfg: TrainConfig, send: Callable[..., None], rows_path: str) -> None:
    """One worker, inside the Tune trial's process; Tune retries it from its checkpoint."""
    device = torch.device("cuda" if cfg.gpus_per_worker > 0 else "cpu")
    reports = _Reports(cfg, 0, tune.get_context().get_trial_id(),
                       ray.get_runtime_context().get_node_id(), send, tune.Checkpoint, device,
                       rows_path)
    _set_threads(cfg, device)
    try:
        run_training(cfg, report=reports.report, device=device, checkpoint=reports.checkpoint,
                     resume=_load_state(tune.get_checkpoint()))
    finally:  # a trial that raises keeps the evaluations it made before
        reports.flush()
        if reports.log is not None:
            reports.log.close()


def run_trial(config: dict[str, Any], base: dict[str, Any], run_dir: str) -> None:
    """The Tune function trainable: one trial, whatever its number of workers."""
    rows_path = str(trial_rows_path(Path(run_dir), tune.get_context().get_trial_id()))
    cfg: TrainConfig | None = None
    try:
        cfg = parse_config(merge_values(base, space_values(config)))  # the trial's one parse
        if cfg.workers == 1 and cfg.launcher == "auto":
            _train_in_trial(cfg, tune.report, rows_path)
        else:
            _train_with_workers(cfg, str(Path(run_dir) / RAY_DIR), rows_path)
    except Exception as exc:  # a failed trial is a recorded outcome, not a crashed study
        if not isinstance(exc, UserError):
            traceback.print_exc()
        last = (read_rows(rows_path) or [None])[-1]  # how far it got
        row = _failed_row(exc, last, cfg)
        log = RowLog(rows_path)
        log.append(row)
        log.close()
        tune.report(row)


def _values(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return merge_values(base, space_values(config), as_given=True)  # sizes even a bad one


def resources_for(config: dict[str, Any], base: dict[str, Any],
                   slots: bool) -> tune.PlacementGroupFactory:
    return trial_resources(_values(config, base), slots)


def cpus_for(config: dict[str, Any], base: dict[str, Any]) -> int:
    return trial_cpus(_values(config, base))


def trial_cpus(values: dict[str, Any]) -> int:
    """CPUs a trial takes: workers x cpus_per_worker."""
    return int(values.get("workers", 1)) * int(values.get("cpus_per_worker", 1))


def trial_resources(values: dict[str, Any], slots: bool) -> tune.PlacementGroupFactory:
    """What Tune reserves for a trial: the trial's own process for one worker, else only the
    slot (the TorchTrainer's workers take their CPUs themselves)."""
    workers = int(values.get("workers", 1))
    cpus = int(values.get("cpus_per_worker", 1))
    gpus = float(values.get("gpus_per_worker", 0.0))
    if workers == 1 and values.get("launcher", "auto") == "auto":
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **({SLOT: cpus} if slots else {})}
    else:
        bundle = {SLOT: trial_cpus(values)} if slots else {"CPU": 0.01}
    return tune.PlacementGroupFactory([bundle])

