"""Analysis: pure functions over the result tables (trials, history) returning DataFrames;
tested on literal tables. No Ray and no plotting: each function takes the tables as
``lbt_study.results.load_results`` returns them and gives back a new DataFrame (or a small
frozen dataclass of DataFrames and numbers). Nothing here imports the results writer, the
runner, the report or the CLI (the layering contract in pyproject.toml checks it), so the
modules are imported plainly: no trial process imports this package.
"""

from lbt_study.analysis.best import best_per_batch_size, gap_by_norm, pareto_front
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.lr import LRScaling, lr_scaling
from lbt_study.analysis.scaling import (
    REGIMES,
    CriticalBatchSize,
    RefitBootstrap,
    classify_regimes,
    critical_batch_size,
    critical_batch_size_bootstrap,
)
from lbt_study.analysis.summary import (
    Analyses,
    AnalysisSettings,
    Outcome,
    StudyInfo,
    add_targets_from_history,
    analyze,
    error_counts,
    gns_curves,
    gns_of_best,
    median_gns,
    status_counts,
)
from lbt_study.analysis.targets import final_and_at_target_gap, reached, time_to_target
from lbt_study.analysis.throughput import throughput_frontier

__all__ = [
    "REGIMES",
    "Analyses",
    "AnalysisSettings",
    "CriticalBatchSize",
    "LRScaling",
    "Outcome",
    "RefitBootstrap",
    "StudyInfo",
    "add_targets_from_history",
    "analyze",
    "best_per_batch_size",
    "classify_regimes",
    "critical_batch_size",
    "critical_batch_size_bootstrap",
    "error_counts",
    "final_and_at_target_gap",
    "gap_by_norm",
    "gns_curves",
    "gns_of_best",
    "lr_scaling",
    "median_gns",
    "pareto_front",
    "reached",
    "status_counts",
    "steps_to_target_frontier",
    "throughput_frontier",
    "time_to_target",
]
