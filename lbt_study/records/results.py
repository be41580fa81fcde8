"""Tidy result tables: one row per trial, and one row per (trial, evaluation).

Both tables are written as trials finish, as Parquet and CSV side by side, each file replaced
atomically. ``load_results(run_dir)`` returns them as DataFrames. Scalar cells only; a missing
value is NaN/None. The trials table joins Optuna's ``study.trials_dataframe()`` on
``optuna_trial_number == number``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lbt_study.records.rowlog import read_row_file, say_damaged
from lbt_study.records.rundir import HISTORY, TRIALS, has_table, read_table, trial_rows_path
from lbt_study.records.schema import (
    FINAL_METRICS,
    HISTORY_COLUMNS,
    TRIAL_IDENTITY_COLUMNS,
    TRIAL_ONLY_KEYS,
    TRIAL_RESULT_COLUMNS,
    TRIALS_AT_TARGET,
)
from lbt_study.records.targets import time_to_target
from lbt_study.train.config import DEFAULT_CROSSING, TrainSettings
from lbt_study.train.measurements import about_columns, final_columns, seconds_columns

TRIALS_COLUMNS: dict[str, str] = {
    **TRIAL_IDENTITY_COLUMNS,
    **{name: f"trial config: {name}" for name in TrainSettings.model_fields},
    **TRIAL_RESULT_COLUMNS,
}
"""The documented trials-table columns, in order."""

_FROM_LAST_ROW = {
    "final_gns_simple": "gns_simple", "flops_per_example": "flops_per_example",
    "mfu": "mfu_run", "step_time_median": "step_time_median_run", "worker_nodes": "worker_nodes",
    "step_time_p90": "step_time_p90_run", "peak_memory_bytes": "peak_memory_bytes",
    **{column: column for column in final_columns()},
    **{column: column for column in seconds_columns()},
    "stopped_at_target": "stopped_at_target",
    "train_examples": "train_examples", "micro_batch_size": "micro_batch_size",
    "norm_batch_size": "norm_batch_size", "accumulation_steps_used": "accumulation_steps_used",
}
_REPORTED_ONCE = ("learning_rate", "adam_beta2", "adamw_tau_epochs", "batch_schedule",
                  *about_columns())
"""Reported with the trial's first and last rows, not with every evaluation."""


def trial_status(last: Mapping[str, Any] | None, error: str | None = None) -> str:
    """A finished trial's status from its last report: stopped before its end means pruned."""
    if error is not None or last is None:
        return "failed"
    status = str(last.get("status", "failed"))
    return "pruned" if status == "running" else status


def trial_record(
    trial_id: str,
    requested: Mapping[str, Any],
    rows: list[Mapping[str, Any]],
    wall_seconds: float,
    optuna_number: int | None,
    direction: str = "maximize",
    error: str | None = None,
    target: float | None = None,
    crossing: str = DEFAULT_CROSSING,
) -> dict[str, Any]:
    """The trials-table row for one finished trial, from what it reported: the config as it
    ran (``config_as_run``), else the ``requested`` values as given (a trial that could not
    parse its config or died before reporting), and its evaluations."""
    last = rows[-1] if rows else None
    status = trial_status(last, error)
    if last is not None and last.get("error"):
        error = str(last["error"])
    rec: dict[str, Any] = {
        "trial_id": trial_id, "optuna_trial_number": optuna_number, "status": status,
        "error": error,
    }
    rec.update(config_columns(rows, requested))
    evals = [r for r in rows if "val_loss" in r and r.get("status") != "failed"]
    final = evals[-1] if evals else {}
    rec.update({f"final_{m}": final.get(m, math.nan) for m in FINAL_METRICS})
    rec["best_objective"] = _best(evals, direction)
    last = last or {}
    train_s, eval_s = last.get("train_seconds", math.nan), last.get("eval_seconds", math.nan)
    rec.update(
        total_steps=last.get("total_steps"), warmup_steps=last.get("warmup_steps"),
        steps=last.get("step"), examples_seen=last.get("examples_seen"),
        throughput=(last["examples_seen"] / train_s) if train_s and train_s > 0 else math.nan,
        train_seconds=train_s, eval_seconds=eval_s, wall_seconds=wall_seconds,
        fixed_cost_seconds=wall_seconds - train_s - eval_s,
        diverged_step=last.get("diverged_step"), evaluations=len(evals),
    )
    rec.update({col: last.get(key, math.nan) for col, key in _FROM_LAST_ROW.items()})
    for key in ("micro_batch_size", "norm_batch_size", "accumulation_steps_used"):
        if key not in last:
            rec[key] = None
    rec.update(at_target(trial_id, evals, target, direction, crossing))
    return rec


def config_columns(rows: list[Mapping[str, Any]], requested: Mapping[str, Any]) -> dict:
    """Every trial-config column, as the trial reported it ran (or as requested), with the
    learning rate and batch schedule it reported (NaN/None when it reported none)."""
    reported = next((r["config_as_run"] for r in rows if r.get("config_as_run")), None)
    config = json.loads(reported) if reported else dict(requested)
    out: dict[str, Any] = {k: config.get(k) for k in TrainSettings.model_fields}
    out.update(learning_rate=math.nan, adam_beta2=math.nan, adamw_tau_epochs=math.nan,
               batch_schedule=None, **dict.fromkeys(about_columns()))
    for row in rows:
        out.update({k: row[k] for k in _REPORTED_ONCE if k in row})
    return out


def at_target(trial_id: str, evals: list[Mapping[str, Any]], target: float | None,
              direction: str, crossing: str = DEFAULT_CROSSING) -> dict[str, Any]:
    """The trial's at-target columns under the rule ``crossing``, measured where its row is
    made."""
    out: dict[str, Any] = {"target": target, "reached_target": False,
                           **dict.fromkeys(TRIALS_AT_TARGET, math.nan),
                           **dict.fromkeys(GNS_AT_TARGET, math.nan)}
    if target is None or not evals:
        return out
    history = pd.DataFrame.from_records([history_record(trial_id, r) for r in evals])
    found = time_to_target(history, target, direction, crossing=crossing).iloc[0]
    out["reached_target"] = bool(found["reached"])
    out.update({c: found[c] for c in TRIALS_AT_TARGET})
    step = found["eval_step_at_target"]  # an interpolated steps_to_target lies before it
    at = next((r for r in evals if r["step"] == step), {})
    out["gns_at_target"] = _number(at.get("gns_probe"))
    out["gns_probe_se_at_target"] = _number(at.get("gns_probe_se"))
    out["gns_mean_to_target"] = mean_up_to(evals, "gns_probe", step)
    return out


GNS_AT_TARGET = ("gns_at_target", "gns_probe_se_at_target", "gns_mean_to_target")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def mean_up_to(evals: list[Mapping[str, Any]], column: str, step: float) -> float:
    """Mean of ``column`` over the evaluations at steps <= ``step``, skipping missing
    values; NaN when ``step`` is NaN or no evaluation has a value."""
    if not math.isfinite(step):
        return math.nan
    values = [float(r[column]) for r in evals if r["step"] <= step
              and isinstance(r.get(column), int | float) and math.isfinite(r[column])]
    return sum(values) / len(values) if values else math.nan


def _best(evals: list[Mapping[str, Any]], direction: str) -> float:
    values = [r["objective"] for r in evals if math.isfinite(r.get("objective", math.nan))]
    if not values:
        return math.nan
    return max(values) if direction == "maximize" else min(values)


ROWS_KEY = "lbt_rows"
"""Where a Tune result carries the evaluation rows since the previous report (JSON); the
result's own keys are the latest row's, for ASHA and the progress lines (``runner._Reports``
writes it; the runner's callbacks and ``lbt_study.study.integrations`` read it)."""


def reported_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evaluation rows a Tune result carries (a result without them is one row)."""
    return json.loads(result[ROWS_KEY]) if ROWS_KEY in result else [dict(result)]


def history_record(trial_id: str, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The history-table row for one evaluation report (None for reports that are not one):
    the documented columns and the workload's metrics (``train_<m>``, ``val_<m>``); the
    trial-level keys (``TRIAL_ONLY_KEYS``) and anything Ray adds are left out."""
    if "val_loss" not in row:
        return None
    rec = {"trial_id": trial_id}
    for key, value in row.items():
        if key in HISTORY_COLUMNS or (key.startswith(("train_", "val_"))
                                      and key not in TRIAL_ONLY_KEYS):
            rec[key] = value
    return rec


def trial_history(trial_id: str, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The history-table rows of one trial's reported rows."""
    return [h for h in (history_record(trial_id, r) for r in rows) if h is not None]


class ResultsWriter:
    """Holds the trials table and writes it as each trial finishes. The history table is
    merged from the trials' own row files (``lbt_study.records.rowlog``) at the first trial, every
    ``history_every_s`` seconds and at ``flush``: the driver never holds the history, and a
    dense study does not rewrite it after every trial. ``load_results`` merges the rows of
    finished trials not yet in the table."""

    def __init__(self, run_dir: Path, keep_existing: bool = False,
                 history_every_s: float = 30.0) -> None:
        """``keep_existing``: start from the trials table already in ``run_dir`` (resume)."""
        self.run_dir = Path(run_dir)
        self.trials: list[dict[str, Any]] = []
        self.history_every_s = history_every_s
        self.history_written = -math.inf
        if keep_existing and has_table(self.run_dir, TRIALS):
            self.trials = read_table(self.run_dir, TRIALS).to_dict("records")

    def add_trial(self, rec: dict[str, Any]) -> None:
        """A finished trial, whose rows are already on disk (the trial wrote them)."""
        self.trials.append(rec)
        if time.monotonic() - self.history_written >= self.history_every_s:
            self.flush()
        else:
            write_table(_frame(self.trials, list(TRIALS_COLUMNS)), self.run_dir, TRIALS)

    def flush(self) -> None:
        """Both whole tables: the history, merged, first."""
        ids = [str(t["trial_id"]) for t in self.trials]
        write_table(merged_history(self.run_dir, ids), self.run_dir, HISTORY)
        write_table(_frame(self.trials, list(TRIALS_COLUMNS)), self.run_dir, TRIALS)
        self.history_written = time.monotonic()


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    extra = [c for c in df.columns if c not in columns]
    return df.reindex(columns=[*columns, *extra])


def write_table(df: pd.DataFrame, run_dir: Path, name: str) -> None:
    """``name``.parquet and ``name``.csv in ``run_dir``, each replaced atomically."""
    for suffix, write in ((".parquet", df.to_parquet), (".csv", df.to_csv)):
        final = run_dir / f"{name}{suffix}"
        tmp = final.with_name(f".{final.name}.tmp")
        write(tmp, index=False)
        os.replace(tmp, final)


def load_results(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) of a run directory, as DataFrames: the history table with the rows
    of trials finished since it was last written, in the trials' order."""
    run_dir = Path(run_dir)
    trials = read_table(run_dir, TRIALS)
    return trials, merged_history(run_dir, list(trials["trial_id"].astype(str)))


def merged_history(run_dir: Path, trial_ids: list[str]) -> pd.DataFrame:
    """The history table (if any) and, after it, the rows each trial in ``trial_ids`` that
    it does not hold wrote to its own file."""
    columns = list(HISTORY_COLUMNS)
    table = read_table(run_dir, HISTORY) if has_table(run_dir, HISTORY) else None
    known = set() if table is None else set(table["trial_id"].astype(str))
    extra, damaged = [], {}
    for tid in trial_ids:
        if tid in known:
            continue
        path = trial_rows_path(run_dir, tid)
        read = read_row_file(path)
        extra += trial_history(tid, read.rows)
        if read.damaged:
            damaged[path] = read.damaged
    if damaged:
        say_damaged(damaged)  # once, in one line, for all the run's row files
    if table is not None and not extra:
        return table
    if table is None or table.empty:
        return _frame(extra, columns).astype({"trial_id": str})
    return pd.concat([table, _frame(extra, columns)], ignore_index=True)
