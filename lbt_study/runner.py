"""Run a study on Ray: Ray Tune + OptunaSearch choose configs, each trial trains with DDP.

The only module that imports Ray. A trial with one worker runs the training loop inside the
Tune trial itself (same code, no separate worker group: seconds less fixed cost per trial); a
trial with more workers runs a Ray Train ``TorchTrainer`` (gloo on CPU, nccl on GPU) from
inside the Tune function trainable, the current Tune<->Train pattern.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

# Before Ray is imported: Train's report throttle defaults to 2 s (see shared/RAY_NOTES.md).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune snapshots its experiment state whenever trials checkpoint often (every evaluation
# here) and warns about it; lbt-study resumes from Optuna and its own tables instead.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# lbt-study writes its own tables and resumes from them and Optuna: Tune's per-result JSON,
# CSV and TensorBoard loggers and its frequent experiment-state snapshots only cost driver time.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "300")
# Multi-objective searches read seconds-to-target from the driver's record of the whole
# trial (StudySearch.recorder), not from each reported row, which Tune would insist on.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import logging  # noqa: E402

import optuna  # noqa: E402
import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from lbt_study.branches import branch_columns, plan_cell, skipped_line  # noqa: E402
from lbt_study.config import TrainConfig, parse_config  # noqa: E402
from lbt_study.errors import UserError, one_line  # noqa: E402
from lbt_study.integrations import make_loggers  # noqa: E402
from lbt_study.outcomes import optuna_outcome  # noqa: E402
from lbt_study.results import (  # noqa: E402
    ROWS_KEY,
    ResultsWriter,
    reported_rows,
    trial_record,
)
from lbt_study.rowlog import RowLog, read_rows  # noqa: E402
from lbt_study.rundir import RAY_DIR, trial_rows_path  # noqa: E402
from lbt_study.spec import (  # noqa: E402
    CONFIG_KEY,
    Cell,
    Study,
    merge_values,
    space_values,
    suggest,
)
from lbt_study.storage import open_storage, resolve  # noqa: E402
from lbt_study.train import Cadence, Row, run_training  # noqa: E402

# With Tune's loggers off, its ResultGrid warns at the end of every run that it found no
# result.json: lbt-study's tables hold the results.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

SLOT = "lbt_cpu"
"""Custom resource mirroring CPUs: a trial reserves all its workers' CPUs up front, so a
multi-worker trial never waits for CPUs held by other trials."""

Progress = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0


# ---------------------------------------------------------------- trial side (Ray workers)

def _failed_row(exc: BaseException, last: Row | None, cfg: TrainConfig | None) -> Row:
    """A failed trial's last row: how far it got, and the config it ran when it parsed one."""
    row: Row = {"status": "failed", "error": one_line(exc), "objective": math.nan,
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
    source: ``lbt_study.rowlog``). They are sent to Tune every ``report_every_s`` seconds
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


def _trial(config: dict[str, Any], base: dict[str, Any], run_dir: str) -> None:
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
    try:
        return merge_values(base, space_values(config))
    except UserError:
        return {**base, **space_values(config)}  # the trial will fail and record why


def _resources_for(config: dict[str, Any], base: dict[str, Any],
                   slots: bool) -> tune.PlacementGroupFactory:
    return trial_resources(_values(config, base), slots)


def _trial_cpus(config: dict[str, Any], base: dict[str, Any]) -> int:
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


# ---------------------------------------------------------------- driver side

class SpaceOf:
    """A cell's space as OptunaSearch calls it; a class, since OptunaSearch pickles it."""

    def __init__(self, study: Study, cell: Cell) -> None:
        self.study, self.cell = study, cell

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {CONFIG_KEY: self.cell.apply(suggest(self.study, trial))}


class StudySearch(OptunaSearch):
    """OptunaSearch that records outcomes faithfully.

    Before Optuna is told anything, ``recorder(trial_id, error)`` writes the trial's row to
    the tables and returns it, so a trial Optuna knows as finished is always in the tables
    (resume relies on it), and Optuna is told what the table says: COMPLETE with the final
    objective (and seconds to target, multi-objective: never reached = infinitely slow),
    PRUNED when stopped early, FAIL for diverged / out-of-memory / failed trials (so the
    sampler moves away), never COMPLETE with a made-up value. Intermediate values (each
    evaluation's objective at its examples seen, not at Tune iterations) are written only
    when ``intermediate_values`` is set: nothing here prunes on them, and each is a SQLite
    write on the driver.
    """

    recorder: Callable[[str, bool], dict[str, Any]]
    intermediate_values: bool = False
    size_of: Callable[[dict[str, Any]], int] | None = None
    """CPUs a suggested config's trial takes (set by the runner)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: dict[str, int] = {}  # CPUs of every suggested trial
        self.waiting: set[str] = set()  # suggested, not started yet

    def suggest(self, trial_id: str) -> dict | str | None:
        """A new trial, or None while a trial of several CPUs waits for them: it starts
        before any later trial, never starved by 1-worker trials taking each CPU as it
        frees (which fill every CPU otherwise)."""
        if any(self.sizes[t] > 1 for t in self.waiting):
            return None
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self.sizes[trial_id] = self.size_of(config) if self.size_of else 1
            self.waiting.add(trial_id)
        return config

    def started(self, trial_id: str) -> None:
        self.waiting.discard(trial_id)

    def waits_again(self, trial_id: str) -> None:
        """A trial Tune restarts waits for its resources again."""
        if trial_id in self.sizes:
            self.waiting.add(trial_id)

    def optuna_number(self, trial_id: str) -> int | None:
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint, without the user's space function and the recorder
        (which need not pickle); lbt-study resumes from the Optuna database, not this file."""
        space, self._space = self._space, None
        recorder = self.__dict__.pop("recorder", None)
        try:
            super().save(checkpoint_path)
        finally:
            self._space = space
            if recorder is not None:
                self.recorder = recorder

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self.intermediate_values or isinstance(self.metric, list):
            return  # Optuna takes no intermediate values for several objectives
        for row in reported_rows(result):
            value = row.get(self.metric)
            if isinstance(value, float) and math.isfinite(value) and "examples_seen" in row:
                self._ot_trials[trial_id].report(value, int(row["examples_seen"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        self.started(trial_id)  # a trial that ends without starting waits no more
        rec = self.recorder(trial_id, error)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("status", rec["status"])
        ot_trial.set_user_attr("tune_trial_id", trial_id)
        state, values = optuna_outcome(rec, isinstance(self.metric, list))
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)


class ResultsCallback(tune.Callback):
    """Writes the tables as trials finish (``record``, called by the searcher before Optuna
    is told, or by Tune's completion hooks, whichever is first) and prints one progress line
    per finished trial. It keeps each running trial's latest result only: a trial's rows are
    read from the file the trial wrote (``lbt_study.rowlog``) when it finishes."""

    def __init__(self, writer: ResultsWriter, study: Study, direction: str, total: int,
                 progress: Progress, target: float | None = None,
                 announce: Progress | None = None) -> None:
        self.writer, self.study, self.target = writer, study, target
        self.announce = announce  # a line per trial start: its batch schedule
        self.direction, self.total, self.progress = direction, total, progress
        self.search: StudySearch | None = None
        self.cell_name = study.name
        self.trials: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.latest: dict[str, Row] = {}
        self.announced: set[str] = set()
        self.records: dict[str, dict[str, Any]] = {}
        self.done = len(writer.trials)
        self.last_line = time.time()

    def use(self, search: StudySearch, cell_name: str) -> None:
        """The search (one per protocol cell) whose trials come next."""
        self.search, self.cell_name = search, cell_name
        search.recorder = self.record

    def say(self, line: str) -> None:
        self.progress(line)
        self.last_line = time.time()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """A heartbeat when nothing was printed for a while: what is running, how far."""
        if time.time() - self.last_line < HEARTBEAT_SECONDS:
            return
        running = []
        for tid in self.started.keys() - self.records.keys():
            last = self.latest.get(tid, {})
            where = f"step {last['step']}/{last['total_steps']}" if "step" in last and \
                "total_steps" in last else "starting"
            running.append(f"{tid} {where} ({time.time() - self.started[tid]:.0f} s)")
        self.say(f"... {self.done}/{self.total} finished; running: "
                 f"{', '.join(sorted(running)) or '-'}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Also called when Tune restarts a failed trial: its start time stays."""
        self.trials[trial.trial_id] = trial
        self.started.setdefault(trial.trial_id, time.time())
        if self.search is not None:
            self.search.started(trial.trial_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.search is not None:
            self.search.waits_again(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        tid = trial.trial_id
        self.latest[tid] = result
        if self.announce is None or tid in self.announced:
            return
        schedule = next((r["batch_schedule"] for r in reported_rows(result)
                         if r.get("batch_schedule")), None)
        if schedule:
            self.announced.add(tid)
            self.announce(f"    {tid} started: {schedule}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials.setdefault(trial.trial_id, trial)
        self.record(trial.trial_id, False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials.setdefault(trial.trial_id, trial)
        self.record(trial.trial_id, True)

    def record(self, tid: str, error: bool) -> dict[str, Any]:
        """Write the trial's row (once; its history is on disk already) and return it."""
        if tid in self.records:
            return self.records[tid]
        trial = self.trials[tid]
        message = None
        if error:
            exc = trial.get_error()
            message = one_line(exc) if exc else \
                "the trial's process ended without an error message (killed, or crashed)"
        wall = time.time() - self.started.get(tid, time.time())
        try:
            values = self.study.trial_values(space_values(trial.config), self.target)
        except UserError:
            values = space_values(trial.config)
        rows = self._rows(tid)
        number = self.search.optuna_number(tid) if self.search is not None else None
        rec = {**trial_record(tid, values, rows, wall, number, self.direction, message,
                              self.target), "optuna_study": self.cell_name,
               **branch_columns(trial.config),
               "started_at": self.started.get(tid, math.nan), "finished_at": time.time()}
        self.writer.add_trial(rec)
        self.records[tid] = rec
        self.latest.pop(tid, None)
        self.done += 1
        self.say(_progress_line(self.done, self.total, rec))
        return rec

    def _rows(self, tid: str) -> list[Row]:
        """What the trial wrote; if it wrote nothing it could (it died first, or its node
        cannot reach the run directory), the rows of its latest result."""
        rows = read_rows(trial_rows_path(self.writer.run_dir, tid))
        latest = self.latest.get(tid)
        return rows or ([] if latest is None else reported_rows(latest))


def _progress_line(done: int, total: int, rec: dict[str, Any]) -> str:
    width = len(str(total))
    objective = rec.get("final_objective", math.nan)
    shown = f"objective {objective:.4f}" if isinstance(objective, float) and \
        math.isfinite(objective) else (rec.get("error") or "no objective")
    return (f"[{done:>{width}}/{total}] {rec['status']:<8} B={rec['batch_size']!s:<5} "
            f"workers={rec['workers']} norm={rec['norm']:<11} lr={rec['learning_rate']:.3g} "
            f"-> {shown} ({rec['wall_seconds']:.1f} s)")


def efficiency_line(trials: list[dict[str, Any]], wall: float, cpus: float) -> str:
    """Study efficiency: the CPU-seconds spent training (train_seconds x workers x CPUs per
    worker, summed over the trials) over the CPU-seconds the study held (wall x CPUs)."""
    used = sum(_number(t.get("train_seconds")) * _number(t.get("workers"), 1.0)
               * _number(t.get("cpus_per_worker"), 1.0) for t in trials)
    held = wall * cpus
    share = f"{used / held:.1%}" if held > 0 else "n/a"
    return (f"study efficiency {share}: {used:.1f} CPU-s of training in {wall:.1f} s on "
            f"{cpus:g} CPUs ({len(trials)} trials)")


def _number(value: Any, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to a cluster (``address``) or start a local one; True if it has trial slots."""
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, resources={SLOT: cpus}, include_dashboard=None,
                     dashboard_host="127.0.0.1", **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot start or reach Ray at {address or 'local'}: {one_line(exc)}") \
            from None
    return SLOT in ray.cluster_resources()


def ray_running() -> bool:
    """Whether this process has started or joined Ray (``start_ray``)."""
    return ray.is_initialized()


def stop_ray() -> None:
    """Leave the Ray that ``start_ray`` started or joined (a local one shuts down)."""
    ray.shutdown()


def concurrency(requested: int | None, max_trial_cpus: int, slots: bool) -> int | None:
    """How many trials may run at once: the requested limit, else one per CPU.

    Tune asks Ray for the resources of every pending trial at once, so a 2-worker trial
    could wait forever while 1-worker trials take each CPU as it frees; the search holds
    back new trials while a multi-CPU one waits (``StudySearch.suggest``), so it starts as
    soon as enough CPUs are free, and 1-worker trials fill every CPU otherwise. A trial
    larger than the cluster would wait forever: that is a ``UserError``.
    """
    if not slots:
        return requested
    total = int(ray.cluster_resources()[SLOT])
    if max_trial_cpus > total:
        raise UserError(f"the space gives trials of {max_trial_cpus} CPUs (workers x "
                        f"cpus_per_worker) but the cluster has {total} {SLOT}: they could "
                        "never start")
    return requested or total


def make_search(study: Study, cell: Cell, run_dir: Path, direction: str,
                enqueue: bool = True, storage_url: str | None = None) -> StudySearch:
    """OptunaSearch on the cell's study in ``storage_url`` (default: the run's SQLite;
    lbt_study.storage), created or loaded when it exists; the initial points are enqueued
    only when the study is new."""
    storage = open_storage(resolve(storage_url, run_dir))
    mode = "max" if direction == "maximize" else "min"
    search = StudySearch(
        space=SpaceOf(study, cell),
        metric=["objective", "seconds_to_target"] if study.multi_objective else "objective",
        mode=[mode, "min"] if study.multi_objective else mode,
        sampler=make_sampler(study.sampler_name, study.sampler_seed, study.multi_objective),
        study_name=cell.study_name,
        storage=storage,
        points_to_evaluate=(list(study.initial_points) or None) if enqueue else None,
    )
    search.intermediate_values = study.optuna_intermediate_values
    return search


def make_sampler(name: str, seed: int, multi: bool) -> optuna.samplers.BaseSampler:
    """tpe: Optuna's TPE (NSGA-II when there are several objectives); qmc: scrambled Sobol
    quasi-random points (Shallue et al. 2018 used quasi-random search); random."""
    if name == "qmc":
        with warnings.catch_warnings():  # "QMCSampler is experimental": said once, in docs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if multi:
        return PicklableNSGAII(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """NSGA-II that pickles: Optuna 5.1's genetic samplers hold a ``threading.Lock``, and
    Tune pickles its searcher (sampler included) into tuner.pkl when the Tuner is built."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def run_study(study: Study, run_dir: Path, direction: str, *,
              remaining: dict[str, int] | None = None, address: str | None = None,
              num_cpus: int | None = None, spec_module: ModuleType | None = None,
              max_trial_cpus: int = 1, target: float | None = None,
              progress: Progress = print,
              announce: Progress | None = None, storage: str | None = None) -> ResultsWriter:
    """Run every cell of the study to completion; return the writer holding both tables.

    ``progress`` gets a line per finished trial and a heartbeat; ``announce``, if given, the
    details: a line per trial start with its batch schedule, and the study's efficiency at
    the end (``efficiency_line``).

    ``max_trial_cpus`` is the largest trial (workers x cpus_per_worker) the space gives; see
    ``concurrency``. ``remaining`` (resume) maps cell study names to the trials still to run;
    they are appended to the tables already in ``run_dir`` (see lbt_study.resume).
    ``storage``: the Optuna storage URL, password included (None: the run's SQLite).
    """
    run_dir = Path(run_dir).resolve()
    resume = remaining is not None
    todo = [(cell, cell.trials if remaining is None else remaining.get(cell.study_name, 0))
            for cell in study.cells()]
    if spec_module is not None:  # pickle the user's space function by value, not by name
        ray.cloudpickle.register_pickle_by_value(spec_module)
    started_here = not ray.is_initialized()
    slots = start_ray(address, num_cpus) if started_here else SLOT in ray.cluster_resources()
    try:
        writer = ResultsWriter(run_dir, keep_existing=resume)
        callback = ResultsCallback(writer, study, direction,
                                   len(writer.trials) + sum(n for _, n in todo), progress,
                                   target, announce)
        limit = concurrency(study.max_concurrent_trials, max_trial_cpus, slots)
        t0, done = time.time(), len(writer.trials)
        for cell, n in todo:
            planned = plan_cell(study, cell, run_dir, writer.trials)  # branched: base, branches
            if planned is None:
                progress(skipped_line(study, writer.trials))
            elif n > 0:
                cell_study, cell = planned
                search = make_search(cell_study, cell, run_dir, direction, enqueue=not resume,
                                     storage_url=storage)
                callback.use(search, cell.study_name)
                _tune(cell_study, search, callback, n, limit, run_dir, slots)
        writer.flush()
        if announce is not None:
            cpus = float(ray.cluster_resources().get("CPU", 0.0))
            announce(efficiency_line(writer.trials[done:], time.time() - t0, cpus))
        return writer
    finally:
        if started_here:
            ray.shutdown()


def _tune(study: Study, search: StudySearch, callback: ResultsCallback, trials: int,
          limit: int | None, run_dir: Path, slots: bool) -> None:
    """One Tune run: ``trials`` trials of one search."""
    # the trainable carries plain values, never the spec
    base = study.base_values(callback.target)
    if study.asha is not None:  # ASHA judges its rungs at reports: report every evaluation
        base.setdefault("report_every_s", 0.0)
    trainable = tune.with_resources(
        partial(_trial, base=base, run_dir=str(run_dir)),
        partial(_resources_for, base=base, slots=slots),
    )
    search.size_of = partial(_trial_cpus, base=base)
    scheduler = None
    if study.asha is not None:
        scheduler = ASHAScheduler(
            time_attr="examples_seen", metric="objective", mode=search.mode,
            max_t=study.asha.max_examples, grace_period=study.asha.grace_examples,
            reduction_factor=study.asha.reduction_factor,
        )
    storage = str(run_dir / RAY_DIR)
    name = f"tune-{len(list(Path(storage).glob('tune-*')))}"
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=trials,
                                    max_concurrent_trials=limit, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            callbacks=[callback, *make_loggers(study.log, run_dir, study.name)],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    tuner.fit()
