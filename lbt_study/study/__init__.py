"""The driver: the only package that imports Ray (a contract in pyproject.toml says so).

``spec`` (the Study a spec file defines), ``preflight`` (checked before Ray starts),
``protocols`` (which searches a study runs), ``search`` (Optuna through Ray Tune),
``trial`` (one Tune trial: the training loop in-process or a Ray Train worker group),
``driver`` (run a study's cells, record every trial as it finishes), ``cluster`` (start or
join Ray), ``resume``, ``storage`` (Optuna storage URLs), ``integrations`` (Tune loggers).
Importing the package sets Ray's environment before anything imports Ray.
"""

import os

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
