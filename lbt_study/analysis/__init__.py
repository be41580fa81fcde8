"""Analysis: pure functions over the result tables (trials, history) returning DataFrames;
tested on literal tables. No Ray and no plotting: each function takes the tables as
``lbt_study.results.load_results`` returns them and gives back a new DataFrame (or a small
frozen dataclass of DataFrames and numbers).

The modules that need scipy are imported on first use (PEP 562 ``__getattr__``): the results
writer imports ``targets`` in every trial process, which should not pay for scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lbt_study.analysis.targets import final_and_at_target_gap, reached, time_to_target

if TYPE_CHECKING:
    from lbt_study.analysis.best import best_per_batch_size, gap_by_norm, pareto_front
    from lbt_study.analysis.frontier import steps_to_target_frontier
    from lbt_study.analysis.lr import LRScaling, lr_scaling
    from lbt_study.analysis.scaling import (
        REGIMES,
        CriticalBatchSize,
        classify_regimes,
        critical_batch_size,
    )
    from lbt_study.analysis.throughput import throughput_frontier

_LAZY = {
    "best_per_batch_size": "best", "gap_by_norm": "best", "pareto_front": "best",
    "steps_to_target_frontier": "frontier",
    "LRScaling": "lr", "lr_scaling": "lr",
    "REGIMES": "scaling", "CriticalBatchSize": "scaling", "classify_regimes": "scaling",
    "critical_batch_size": "scaling",
    "throughput_frontier": "throughput",
}

__all__ = [
    "REGIMES",
    "CriticalBatchSize",
    "LRScaling",
    "best_per_batch_size",
    "classify_regimes",
    "critical_batch_size",
    "final_and_at_target_gap",
    "gap_by_norm",
    "lr_scaling",
    "pareto_front",
    "reached",
    "steps_to_target_frontier",
    "throughput_frontier",
    "time_to_target",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
