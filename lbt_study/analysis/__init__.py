"""Analysis: pure functions over the result tables (trials, history) returning DataFrames;
tested on literal tables. No Ray and no plotting: each function takes the tables as
``lbt_study.records.results.load_results`` returns them and gives back a new DataFrame (or a small
frozen dataclass of DataFrames and numbers). ``analyze`` runs them all for one study, each
result an ``Outcome`` (a value or the reason there is none) in the typed ``Results``; an
analysis that cannot be computed on the tables it is given raises ``CannotCompute``, the one
failure that becomes a reason. Nothing here imports the results writer, the runner, the
report or the CLI (the layering contract in pyproject.toml checks it), so the modules are
imported plainly: no trial process imports this package.
"""

from lbt_study.analysis._checks import CannotCompute, missing_columns
from lbt_study.analysis.adaptive import AdaptiveSummary
from lbt_study.analysis.best import best_per_batch_size, gap_by_norm, pareto_front
from lbt_study.analysis.critical import CriticalEstimates
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.lr import LRScaling, lr_scaling
from lbt_study.analysis.noise_scale import GnsCurves, gns_curves, gns_of_best, median_gns
from lbt_study.analysis.outcome import Outcome
from lbt_study.analysis.scaling import (
    REGIMES,
    CriticalBatchSize,
    RefitBootstrap,
    classify_regimes,
    critical_batch_size,
    critical_batch_size_bootstrap,
)
from lbt_study.analysis.settings import AnalysisSettings, StudyInfo
from lbt_study.analysis.summary import (
    Analyses,
    Results,
    add_targets_from_history,
    analyze,
    error_counts,
    status_counts,
)
from lbt_study.analysis.targets import final_and_at_target_gap, reached, time_to_target
from lbt_study.analysis.throughput import throughput_frontier

__all__ = [
    "REGIMES",
    "AdaptiveSummary",
    "Analyses",
    "AnalysisSettings",
    "CannotCompute",
    "CriticalBatchSize",
    "CriticalEstimates",
    "GnsCurves",
    "LRScaling",
    "Outcome",
    "RefitBootstrap",
    "Results",
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
    "missing_columns",
    "pareto_front",
    "reached",
    "status_counts",
    "steps_to_target_frontier",
    "throughput_frontier",
    "time_to_target",
]
