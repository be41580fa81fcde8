"""Resuming a study whose driver died: the Optuna database and the trials table are the
source of truth (not Tune's experiment state, which is written non-atomically and failed to
restore with SQLite-backed OptunaSearch in 2 of 3 kill tests; see shared/RAY_NOTES.md).

A trial is finished when it is in the trials table (rows are written before Optuna is told).
An Optuna trial left RUNNING by the dead driver is either finished (in the table: Optuna is
now told its recorded outcome) or interrupted (not in the table: told FAIL and marked
``interrupted``; a new trial takes its place, so none runs twice and none is lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from lbt_study.errors import UserError
from lbt_study.records.record import StudyRecord
from lbt_study.records.rundir import (
    HISTORY,
    OPTUNA_DB,
    SPEC,
    STUDY_JSON,
    TRIALS,
    check_optuna_db,
    has_table,
    optuna_url,
    read_table,
)
from lbt_study.study.outcomes import optuna_outcome
from lbt_study.study.protocols import Cell
from lbt_study.study.storage import study_names


@dataclass(frozen=True)
class ResumeState:
    finished: int
    remaining: dict[str, int]
    """Trials still to run, by cell (Optuna study name)."""
    interrupted: int

    @property
    def to_run(self) -> int:
        return sum(self.remaining.values())


def read_meta(run_dir: Path) -> StudyRecord:
    """study.json of a run directory, or a one-line error saying what is wrong."""
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    meta = StudyRecord.read(run_dir)
    if meta is None:
        raise UserError(f"{run_dir} is not an lbt-study run directory (no {STUDY_JSON})")
    for name in (SPEC, *([] if meta.storage else [OPTUNA_DB])):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir} is corrupted: {name} is missing")
    return meta


def finished_trials(run_dir: Path) -> pd.DataFrame:
    """The trials table (empty if the driver died before the first trial finished). The
    history table is read too: the resumed run appends to both, so both must be readable."""
    if not has_table(run_dir, TRIALS):
        return pd.DataFrame(columns=["trial_id", "optuna_trial_number", "status"])
    trials = read_table(run_dir, TRIALS)
    read_table(run_dir, HISTORY)
    return trials


def check_run_dir(run_dir: Path, storage: Any = None) -> tuple[pd.DataFrame, set[str]]:
    """(trials table, Optuna study names), read without changing anything: a damaged table
    or database is a ``UserError`` before resume settles a single trial or starts Ray.
    ``storage``: an opened Optuna storage (lbt_study.study.storage), else the run's SQLite."""
    table = finished_trials(run_dir)
    return table, set(check_optuna_db(run_dir) if storage is None else study_names(storage))


def reconcile(run_dir: Path, cells: list[Cell], storage: Any = None) -> ResumeState:
    """Settle the Optuna trials the dead driver left RUNNING in every cell's study; count
    what remains to run in each. ``storage``: as for ``check_run_dir``."""
    table, names = check_run_dir(run_dir, storage)
    if storage is None:
        storage = optuna.storages.RDBStorage(optuna_url(run_dir))
    remaining, interrupted = {}, 0
    for cell in cells:
        rows = _rows_of(table, cell, single=len(cells) == 1)
        remaining[cell.study_name] = max(0, cell.trials - len(rows))
        if cell.study_name in names:
            study = optuna.load_study(study_name=cell.study_name, storage=storage)
            interrupted += _settle_running(study, rows)
    return ResumeState(len(table), remaining, interrupted)


def _rows_of(table: pd.DataFrame, cell: Cell, single: bool) -> pd.DataFrame:
    if "optuna_study" not in table.columns:
        return table if single else table.iloc[0:0]
    return table[table["optuna_study"] == cell.study_name]


def _settle_running(study: optuna.Study, rows: pd.DataFrame) -> int:
    recorded = rows.set_index("optuna_trial_number")
    interrupted = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number in recorded.index:
            _tell_recorded(study, trial, recorded.loc[trial.number])
        else:
            study._storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
            study.tell(trial.number, state=TrialState.FAIL)
            interrupted += 1
    return interrupted


def _tell_recorded(study: optuna.Study, trial: optuna.trial.FrozenTrial, rec: pd.Series) -> None:
    """Tell Optuna what the runner would have told it (lbt_study.study.outcomes)."""
    study._storage.set_trial_user_attr(trial._trial_id, "status", rec["status"])
    study._storage.set_trial_user_attr(trial._trial_id, "tune_trial_id", rec["trial_id"])
    state, values = optuna_outcome(rec, multi_objective=len(study.directions) > 1)
    study.tell(trial.number, values, state=state)
