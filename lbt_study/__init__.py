"""lbt-study: batch-size scaling studies on Ray.

The package, by stage (each a subpackage; ``pyproject.toml`` declares how they may import):

- ``study``: the driver on Ray (spec, preflight, protocols, Tune search, trials, resume,
  storage); the only package that imports Ray;
- ``train``: one trial process in plain torch (config, workloads, batching, norms,
  optimizers, measurements, the loop);
- ``records``: the run directory on disk (row logs, the trials and history tables, their
  schema); no Ray, no torch;
- ``analysis``: pure functions over the tables; ``report``: renders what analysis computed;
- ``cli``: the ``lbt-study`` command.

The names a spec or a user's workload needs are here, imported when first used (so that
``import lbt_study.records`` or ``lbt_study.report`` loads neither torch nor Ray).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Asha": "lbt_study.study.spec", "Branched": "lbt_study.study.spec",
    "StopWhen": "lbt_study.study.spec", "Study": "lbt_study.study.spec",
    "load_results": "lbt_study.records.results",
    "ACCURACY": "lbt_study.train.workload", "Data": "lbt_study.train.workload",
    "Metric": "lbt_study.train.workload", "Workload": "lbt_study.train.workload",
    "NormSpec": "lbt_study.train.norms", "make_norm": "lbt_study.train.norms",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lbt_study' has no attribute {name!r}")
