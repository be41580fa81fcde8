"""Run a study's cells on Ray (``run_study``): one Tune run per cell, every trial written to
the tables as it finishes, a line per finished trial and a heartbeat."""

from __future__ import annotations

import logging  # noqa: E402
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from lbt_study.errors import one_line
from lbt_study.records.results import (  # noqa: E402
    ResultsWriter,
    reported_rows,
    trial_record,
)
from lbt_study.records.rowlog import read_rows  # noqa: E402
from lbt_study.records.rundir import RAY_DIR, trial_rows_path  # noqa: E402
from lbt_study.study.cluster import concurrency, ray_session
from lbt_study.study.integrations import make_loggers  # noqa: E402
from lbt_study.study.protocols import Cell, Protocol, protocol_of
from lbt_study.study.search import CellSearches, make_search
from lbt_study.study.spec import (  # noqa: E402
    Study,
    merge_values,
    space_values,
)
from lbt_study.study.trial import cpus_for, resources_for, run_trial  # noqa: E402
from lbt_study.train import Row  # noqa: E402

# With Tune's loggers off, its ResultGrid warns at the end of every run that it found no
# result.json: lbt-study's tables hold the results.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

Progress = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0


class ResultsCallback(tune.Callback):
    """Writes the tables as trials finish (``record``, called by the searcher before Optuna
    is told, or by Tune's completion hooks, whichever is first) and prints one progress line
    per finished trial. It keeps each running trial's latest result only: a trial's rows are
    read from the file the trial wrote (``lbt_study.records.rowlog``) when it finishes."""

    def __init__(self, writer: ResultsWriter, study: Study, direction: str, total: int,
                 progress: Progress, target: float | None = None,
                 announce: Progress | None = None) -> None:
        self.writer, self.study, self.target = writer, study, target
        self.announce = announce  # a line per trial start: its batch schedule
        self.direction, self.total, self.progress = direction, total, progress
        self.search: CellSearches | None = None
        self.trials: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.latest: dict[str, Row] = {}
        self.announced: set[str] = set()
        self.records: dict[str, dict[str, Any]] = {}
        self.done = len(writer.trials)
        self.last_line = time.time()

    def use(self, search: CellSearches) -> None:
        """The searches whose trials come next (one Tune run's)."""
        self.search = search
        for cell in search.searches:
            cell.recorder = self.record

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
        values = merge_values(self.study.base_values(self.target), space_values(trial.config),
                              as_given=True)
        rows = self._rows(tid)
        number = self.search.optuna_number(tid) if self.search is not None else None
        rec = {**trial_record(tid, values, rows, wall, number, self.direction, message,
                              self.target, self.study.target_crossing),
               "optuna_study": self.search.cell_of(tid) if self.search else self.study.name,
               **protocol_of(self.study).columns(trial.config),
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
    they are appended to the tables already in ``run_dir`` (see lbt_study.study.resume).
    ``storage``: the Optuna storage URL, password included (None: the run's SQLite).
    """
    run_dir = Path(run_dir).resolve()
    resume = remaining is not None
    todo = [(cell, cell.trials if remaining is None else remaining.get(cell.study_name, 0))
            for cell in study.cells()]
    if spec_module is not None:  # pickle the user's space function by value, not by name
        ray.cloudpickle.register_pickle_by_value(spec_module)
    protocol = protocol_of(study)
    with ray_session(address, num_cpus) as slots:
        writer = ResultsWriter(run_dir, keep_existing=resume)
        callback = ResultsCallback(writer, study, direction,
                                   len(writer.trials) + sum(n for _, n in todo), progress,
                                   target, announce)
        limit = concurrency(study.max_concurrent_trials, max_trial_cpus, slots)
        t0, done = time.time(), len(writer.trials)
        for group in _tune_runs(protocol, study, todo):
            planned = []
            for cell, n in group:
                plan = protocol.plan(study, cell, run_dir, writer.trials)
                if plan is None:
                    progress(protocol.skipped(study, writer.trials))
                elif n > 0:
                    planned.append((*plan, n))
            if planned:
                search = CellSearches([
                    (cell.study_name, make_search(cell_study, cell, run_dir, direction,
                                                  enqueue=not resume, storage_url=storage), n)
                    for cell_study, cell, n in planned])
                callback.use(search)
                _tune(planned[0][0], search, callback, limit, run_dir, slots)
        writer.flush()
        if announce is not None:
            cpus = float(ray.cluster_resources().get("CPU", 0.0))
            announce(efficiency_line(writer.trials[done:], time.time() - t0, cpus))
        return writer


def _tune_runs(protocol: Protocol, study: Study,
               todo: list[tuple[Cell, int]]) -> list[list[tuple[Cell, int]]]:
    """The Tune runs the cells take: all in one, so the CPUs stay busy to the end of the
    study, unless the protocol plans a cell from the ones before it (branched) or ASHA
    judges trials at its rungs (it would compare trials of different batch sizes at equal
    examples): then one run per cell, in order."""
    if protocol.independent_cells and study.asha is None:
        return [todo]
    return [[entry] for entry in todo]


def _tune(study: Study, search: CellSearches, callback: ResultsCallback,
          limit: int | None, run_dir: Path, slots: bool) -> None:
    """One Tune run: every trial of ``search``'s cells."""
    # the trainable carries plain values, never the spec
    base = study.base_values(callback.target)
    if study.asha is not None:  # ASHA judges its rungs at reports: report every evaluation
        base.setdefault("report_every_s", 0.0)
    trainable = tune.with_resources(
        partial(run_trial, base=base, run_dir=str(run_dir)),
        partial(resources_for, base=base, slots=slots),
    )
    search.size_of = partial(cpus_for, base=base)
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
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                    num_samples=search.total,
                                    max_concurrent_trials=limit, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            callbacks=[callback, *make_loggers(study.log, run_dir, study.name)],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    tuner.fit()
