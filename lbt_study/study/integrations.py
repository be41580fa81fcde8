"""Ray Tune's own loggers (``--log tensorboard|mlflow|csv``, ``Study(log=[...])``), fed every
evaluation at its examples seen.

A trial sends several evaluation rows in one Tune result (``runner._Reports``, throttled to
``report_every_s``), so Tune's stock callbacks would log one point per report. Each logger
here unpacks the rows (``rows_of``) and logs every evaluation once (a row Tune's retry of a
trial sends again, from its checkpoint, is not logged twice), its history-table values as the
metrics and ``examples_seen`` as the step. Where each writes:

- ``tensorboard``: ``events.out.tfevents.*`` in each trial's Tune directory
  (``RUN/ray/tune-N/<trial>/``), tags ``ray/tune/<column>`` (tensorboardX).
- ``mlflow``: one MLflow run per trial in the experiment named after the study, at
  ``MLFLOW_TRACKING_URI`` if set, else the file store ``file:RUN/mlruns`` (MLflow 3 asks for
  ``MLFLOW_ALLOW_FILE_STORE=true`` for it; set here when unset).
- ``csv``: ``progress.csv`` in each trial's Tune directory, one line per evaluation.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, LoggerCallback, TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

from lbt_study.errors import UserError
from lbt_study.records.results import history_record, reported_rows
from lbt_study.records.schema import HISTORY_COLUMNS
from lbt_study.train.config import did_you_mean

LOGGERS = ("tensorboard", "mlflow", "csv")
MLFLOW_BATCH = 1000
"""Metrics per MLflow ``log_batch`` (MLflow's limit)."""
_NOT_METRICS = ("trial_id", "worker_nodes")
_METRICS = tuple(c for c in HISTORY_COLUMNS if c not in _NOT_METRICS)


def parse_logs(values: list[str] | None) -> list[str]:
    """``--log`` values, repeated or comma-separated, checked against ``LOGGERS``; each once,
    in the order given."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    if values and not names:
        raise UserError(f"--log {values!r} names no logger; allowed: {', '.join(LOGGERS)}")
    unknown = sorted({n for n in names if n not in LOGGERS})
    if unknown:
        hints = "".join(did_you_mean(n, LOGGERS) for n in unknown)
        raise UserError(f"unknown --log {', '.join(unknown)}{hints}; allowed: "
                        f"{', '.join(LOGGERS)}")
    return list(dict.fromkeys(names))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def rows_of(trial_id: str, result: dict[str, Any], after: float,
            keep_nan: bool) -> Iterator[tuple[float, dict[str, float]]]:
    """(examples seen, metrics) of each evaluation row in ``result`` past ``after`` examples
    seen: the history table's numeric columns (NaN ones only with ``keep_nan``, for a CSV's
    fixed header), the workload's metrics included."""
    for row in reported_rows(result):
        rec = history_record(trial_id, row)
        seen = _number((rec or {}).get("examples_seen"))
        if rec is None or seen is None or seen <= after:
            continue
        metrics = dict.fromkeys(_METRICS, math.nan) if keep_nan else {}
        for key, value in rec.items():
            number = _number(value)
            if key not in _NOT_METRICS and number is not None:
                metrics[key] = number
        if not keep_nan:
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        yield seen, metrics


class _EachEvaluation:
    """Mixin before a Tune ``LoggerCallback``: one ``log_trial_result`` per evaluation row,
    with examples seen as the step (Tune's loggers take ``timesteps_total``, else
    ``training_iteration``; ``timesteps_total`` 0 at step 0 would fall through, so the step
    travels as ``training_iteration``)."""

    keep_nan = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[str, float] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        tid = trial.trial_id
        for seen, metrics in rows_of(tid, result, self._seen.get(tid, -math.inf),
                                     self.keep_nan):
            self._seen[tid] = seen
            logged = {k: v for k, v in metrics.items() if k != TIMESTEPS_TOTAL}
            logged[TRAINING_ITERATION] = int(seen)
            super().log_trial_result(iteration, trial, logged)  # type: ignore[misc]


class EvalTBXLogger(_EachEvaluation, TBXLoggerCallback):
    """TensorBoard events (tensorboardX), one point per evaluation."""


class EvalCSVLogger(_EachEvaluation, CSVLoggerCallback):
    """progress.csv, one line per evaluation, every history column in a fixed header."""

    keep_nan = True


def _mlflow_logger(run_dir: Path, experiment: str) -> LoggerCallback:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class EvalMLflowLogger(_EachEvaluation, MLflowLoggerCallback):
        """One MLflow run per trial, every evaluation at its examples seen: each Tune
        result's rows in one ``log_batch`` (Ray's logger sends a request per metric)."""

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            tid, now = trial.trial_id, int(time.time() * 1000)
            metrics = []
            for seen, values in rows_of(tid, result, self._seen.get(tid, -math.inf), False):
                self._seen[tid] = seen
                metrics += [Metric(k, v, now, int(seen)) for k, v in values.items()]
            client = MlflowClient(self.tracking_uri)
            for i in range(0, len(metrics), MLFLOW_BATCH):
                client.log_batch(self._trial_runs[trial], metrics=metrics[i:i + MLFLOW_BATCH])

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"file:{Path(run_dir) / 'mlruns'}"
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return EvalMLflowLogger(tracking_uri=uri, experiment_name=experiment)


def check_logs(values: list[str] | None) -> list[str]:
    """``parse_logs``, and each logger's package importable (else one line)."""
    names = parse_logs(values)
    for name in names:
        module = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise UserError(f"--log {name} needs the {module} package: pip install "
                            "'lbt-study[integrations]'")
    return names


def make_loggers(names: list[str], run_dir: Path, experiment: str) -> list[LoggerCallback]:
    """The Tune callbacks for ``names`` (see ``LOGGERS``)."""
    made: dict[str, Any] = {
        "tensorboard": EvalTBXLogger, "csv": EvalCSVLogger,
        "mlflow": lambda: _mlflow_logger(run_dir, experiment)}
    return [made[name]() for name in parse_logs(names)]
