"""Tidy result tables: one row per trial, and one row per (trial, evaluation).

Both tables are written as trials finish, as Parquet and CSV side by side, each file replaced
atomically. ``load_results(run_dir)`` returns them as DataFrames. Scalar cells only; a missing
value is NaN/None. The trials table joins Optuna's ``study.trials_dataframe()`` on
``optuna_trial_number == number``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lbt_study.analysis.targets import time_to_target
from lbt_study.batching import make_batch_plan
from lbt_study.config import TrainConfig
from lbt_study.errors import UserError

TRIALS = "trials"
HISTORY = "history"

STATUSES = ("ok", "pruned", "diverged", "oom", "failed")

HISTORY_COLUMNS: dict[str, str] = {
    "trial_id": "Tune trial id (joins the trials table)",
    "step": "optimizer steps taken (0 = before training)",
    "examples_seen": "steps x global batch size",
    "epoch": "examples seen / training-set size",
    "train_seconds": "training time so far, evaluation excluded",
    "lr": "learning rate of the last step",
    "minibatch_loss": "mean training loss of the steps since the previous evaluation",
    "train_loss": "loss on a fixed training subset, eval mode",
    "train_accuracy": "accuracy on the same subset, eval mode",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "gap_loss": "val_loss - train_loss",
    "gap_accuracy": "train_accuracy - val_accuracy",
    "throughput": "training examples/s since the previous evaluation",
    "replica_spread": "max - min over DDP workers of the parameter sum (0: replicas agree)",
    "world_size": "workers in the process group, as the workers measured it",
    "worker_nodes": "Ray node id of each worker in rank order, comma-separated",
    "gns_simple": "gradient noise scale B_simple = tr(S)/|G|^2, in examples (NaN: unmeasurable)",
    "gns_trace_sigma": "tr(S), per-example gradient covariance trace (EMA estimate)",
    "gns_grad_sq": "|G|^2, squared norm of the true gradient (EMA estimate)",
    "gns_small_batch": "the smaller batch of the two-batch-size estimate (the larger is B)",
    "step_time_median": "median seconds per optimizer step since the previous evaluation",
    "step_time_p90": "90th percentile of the same",
    "peak_memory_bytes": "CUDA max allocated (GPU) or process peak RSS (CPU), so far",
    "mfu": "model FLOPs utilisation since the previous evaluation (GPU; NaN on CPU)",
    "objective": "the workload's objective on the validation set",
}

FINAL_METRICS = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap_loss", "gap_accuracy",
    "objective",
)

TRIALS_COLUMNS: dict[str, str] = {
    "trial_id": "Tune trial id",
    "optuna_study": "Optuna study name (the study's name; name/B=.. per protocol cell)",
    "optuna_trial_number": "Optuna trial number (joins trials_dataframe's `number`)",
    "status": "ok, pruned, diverged, oom or failed",
    "error": "one-line reason for failed trials",
    **{name: f"trial config: {name}" for name in TrainConfig.model_fields},
    "learning_rate": "the learning rate used (lr, or base_lr scaled to the batch size)",
    "micro_batch_size": "examples per forward/backward on one worker (as run)",
    "accumulation_steps_used": "micro-batches per worker per step as run (more than asked when "
                               "memory forced a smaller micro-batch; B unchanged)",
    "norm_batch_size": "examples one normalization statistic sees (empty if none)",
    "total_steps": "steps the trial was configured for",
    "warmup_steps": "linear-warmup steps",
    "steps": "steps actually taken",
    "examples_seen": "steps x global batch size",
    **{f"final_{m}": f"{m} at the last evaluation" for m in FINAL_METRICS},
    "best_objective": "best objective over the trial's evaluations",
    "throughput": "examples_seen / train_seconds",
    "train_seconds": "training time, evaluation excluded",
    "eval_seconds": "evaluation time",
    "wall_seconds": "trial wall time seen by the driver (start to finish)",
    "fixed_cost_seconds": "wall_seconds - train_seconds - eval_seconds",
    "diverged_step": "step with a non-finite loss (diverged trials)",
    "evaluations": "rows in the history table",
    "final_gns_simple": "gradient noise scale at the last evaluation",
    "flops_per_example": "forward+backward FLOPs per training example (torch FlopCounterMode)",
    "mfu": "model FLOPs utilisation over the whole run (GPU; NaN on CPU)",
    "step_time_median": "median seconds per optimizer step over the run",
    "step_time_p90": "90th percentile of the same",
    "peak_memory_bytes": "CUDA max allocated (GPU) or process peak RSS (CPU)",
    "sharpness": "top Hessian eigenvalue of the training loss at the end (if measured)",
    "hybrid_alpha": "mean learnt batch-vs-layer mix of hybrid norm layers (NaN if none)",
    "swa": "whether the final evaluation is of SWA-averaged weights",
    "worker_nodes": "Ray node id of each worker in rank order (as the workers reported)",
    "target": "the objective threshold for time-to-target (the workload's, or the study's)",
    "reached_target": "whether an evaluation reached the target",
    **{c: f"{c.replace('_', ' ')} (first evaluation reaching the target; NaN if never)"
       for c in ("steps_to_target", "examples_to_target", "seconds_to_target",
                 "gap_accuracy_at_target", "gap_loss_at_target")},
}

_FROM_LAST_ROW = {
    "final_gns_simple": "gns_simple", "flops_per_example": "flops_per_example",
    "mfu": "mfu_run", "step_time_median": "step_time_median_run", "worker_nodes": "worker_nodes",
    "step_time_p90": "step_time_p90_run", "peak_memory_bytes": "peak_memory_bytes",
    "sharpness": "sharpness", "hybrid_alpha": "hybrid_alpha", "swa": "swa",
}


def trial_status(last: Mapping[str, Any] | None, error: str | None = None) -> str:
    """A finished trial's status from its last report: stopped before its end means pruned."""
    if error is not None or last is None:
        return "failed"
    status = str(last.get("status", "failed"))
    return "pruned" if status == "running" else status


def trial_record(
    trial_id: str,
    config: Mapping[str, Any],
    rows: list[Mapping[str, Any]],
    wall_seconds: float,
    optuna_number: int | None,
    direction: str = "maximize",
    error: str | None = None,
    target: float | None = None,
) -> dict[str, Any]:
    """The trials-table row for one finished trial, from its config and reported rows."""
    last = rows[-1] if rows else None
    status = trial_status(last, error)
    if last is not None and last.get("error"):
        error = str(last["error"])
    rec: dict[str, Any] = {
        "trial_id": trial_id, "optuna_trial_number": optuna_number, "status": status,
        "error": error,
    }
    rec.update(_config_as_run(config))
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
    for key in ("micro_batch_size", "norm_batch_size"):  # as run: memory may have shrunk them
        if key in last:
            rec[key] = last[key]
    rec["accumulation_steps_used"] = last.get("accumulation_steps_used",
                                              config.get("accumulation_steps"))
    rec.update(_at_target(trial_id, evals, target, direction))
    return rec


def _at_target(trial_id: str, evals: list[Mapping[str, Any]], target: float | None,
               direction: str) -> dict[str, Any]:
    cols = ("steps_to_target", "examples_to_target", "seconds_to_target",
            "gap_accuracy_at_target", "gap_loss_at_target")
    out: dict[str, Any] = {"target": target, "reached_target": False,
                           **dict.fromkeys(cols, math.nan)}
    if target is None or not evals:
        return out
    history = pd.DataFrame.from_records([history_record(trial_id, r) for r in evals])
    found = time_to_target(history, target, direction).iloc[0]
    out["reached_target"] = bool(found["reached"])
    out.update({c: found[c] for c in cols})
    return out


def _config_as_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every trial-config field with defaults filled in (raw values if the config is invalid),
    and what follows from them: the learning rate used, the planned micro-batch and norm
    batch size (NaN/None when they cannot be derived)."""
    unknown = {"learning_rate": math.nan, "micro_batch_size": None, "norm_batch_size": None}
    try:
        cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.model_fields})
    except ValueError:
        return {**{k: config.get(k) for k in TrainConfig.model_fields}, **unknown}
    try:
        plan = make_batch_plan(cfg.batch_size, cfg.workers, cfg.accumulation_steps, cfg.norm,
                               cfg.ghost_batch_size)
    except UserError:
        return {**cfg.model_dump(), **unknown}
    return {**cfg.model_dump(), "learning_rate": cfg.learning_rate,
            "micro_batch_size": plan.micro_batch_size, "norm_batch_size": plan.norm_batch_size}


def _best(evals: list[Mapping[str, Any]], direction: str) -> float:
    values = [r["objective"] for r in evals if math.isfinite(r.get("objective", math.nan))]
    if not values:
        return math.nan
    return max(values) if direction == "maximize" else min(values)


def history_record(trial_id: str, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The history-table row for one evaluation report (None for reports that are not one)."""
    if "val_loss" not in row:
        return None
    rec = {"trial_id": trial_id}
    for key, value in row.items():
        if key in HISTORY_COLUMNS or key.startswith(("train_", "val_")):
            rec[key] = value
    return rec


class ResultsWriter:
    """Holds the tables in memory and rewrites the files after every finished trial."""

    def __init__(self, run_dir: Path, keep_existing: bool = False) -> None:
        """``keep_existing``: start from the tables already in ``run_dir`` (resume)."""
        self.run_dir = Path(run_dir)
        self.trials: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        if keep_existing and (self.run_dir / f"{TRIALS}.parquet").is_file():
            trials, history = load_results(self.run_dir)
            self.trials = trials.to_dict("records")
            self.history = history.to_dict("records")

    def add_trial(self, rec: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """A finished trial and its evaluations, written at once."""
        self.history.extend(history)
        self.trials.append(rec)
        self.flush()

    def flush(self) -> None:
        """History first: a trial in the trials file always has its history on disk."""
        write_table(_frame(self.history, list(HISTORY_COLUMNS)), self.run_dir, HISTORY)
        write_table(_frame(self.trials, list(TRIALS_COLUMNS)), self.run_dir, TRIALS)


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
    """(trials, history) of a run directory, as DataFrames."""
    run_dir = Path(run_dir)
    return _read(run_dir, TRIALS), _read(run_dir, HISTORY)


def _read(run_dir: Path, name: str) -> pd.DataFrame:
    parquet, csv = run_dir / f"{name}.parquet", run_dir / f"{name}.csv"
    if parquet.is_file():
        return pd.read_parquet(parquet)
    if csv.is_file():
        return pd.read_csv(csv)
    raise UserError(f"{run_dir} has no {name} table ({parquet.name} or {csv.name}); "
                    "is it an lbt-study run directory?")
