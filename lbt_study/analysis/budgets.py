"""Which budgets a study ran, and how the large-batch gap moves between them.

Hoffer et al. (2017), "train longer, generalize better": on an epochs budget a larger batch
takes fewer updates, and much of its generalization gap is the missing updates; with the
number of updates matched (a steps budget) the large-batch gap should close. ``large_batch_gap``
measures that: per gap, normalization and budget, how much larger the gap is at the largest
batch size than at the smallest (the median over trials of each). Pure functions over the
trials table and the ``gap_by_norm`` frame.
"""

from __future__ import annotations

import math

import pandas as pd

from lbt_study.analysis._checks import require

SETTING_WORDS = {"epochs": ("epochs", "epochs"), "steps": ("budget_steps", "updates"),
                 "examples": ("budget_examples", "examples"),
                 "seconds": ("budget_seconds", "s of training")}
"""budget -> (its setting's column, the unit said after it)."""


def budgets_run(trials: pd.DataFrame) -> int:
    """The number of distinct budgets in the trials table (0 without a budget column)."""
    if "budget" not in trials.columns:
        return 0
    return int(trials["budget"].dropna().nunique())


def budget_label(row: pd.Series) -> str:
    """One trial's budget in words, e.g. "steps: 400 updates", "epochs: 8 epochs"."""
    budget = row.get("budget")
    if not isinstance(budget, str) or budget not in SETTING_WORDS:
        return "unknown"
    column, unit = SETTING_WORDS[budget]
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return budget
    words = f"{budget}: {float(value):g} {unit}"
    if budget == "seconds" and row.get("epochs") is not None:
        words += f" (at most {float(row['epochs']):g} epochs)"
    return words


def budgets_used(trials: pd.DataFrame) -> pd.DataFrame:
    """The budgets the trials ran under: columns budget, setting (in words), n_trials."""
    require(trials, ["budget"], "budgets_used")
    if trials.empty:
        return pd.DataFrame(columns=["budget", "setting", "n_trials"])
    labels = trials.apply(budget_label, axis=1)
    frame = pd.DataFrame({"budget": trials["budget"], "setting": labels})
    counts = frame.groupby(["budget", "setting"], dropna=False).size()
    return counts.rename("n_trials").reset_index()


def large_batch_gap(gap: pd.DataFrame) -> pd.DataFrame:
    """Per (gap, norm, budget): the median gap at the smallest and the largest batch size
    that have one, and ``excess_gap`` = largest - smallest (Hoffer et al.'s large-batch gap).

    ``gap`` is the stacked ``gap_by_norm`` frame (columns gap, norm, budget, batch_size,
    gap_median). Groups with fewer than two batch sizes with a value are left out."""
    require(gap, ["gap", "norm", "budget", "batch_size", "gap_median"], "large_batch_gap")
    shown = gap[pd.to_numeric(gap["gap_median"]).notna()].sort_values("batch_size")
    rows = []
    for (column, norm, budget), part in shown.groupby(["gap", "norm", "budget"], sort=True):
        if len(part) < 2:
            continue
        small, large = part.iloc[0], part.iloc[-1]
        rows.append({"gap": column, "norm": norm, "budget": budget,
                     "smallest_batch_size": small["batch_size"],
                     "gap_at_smallest": small["gap_median"],
                     "largest_batch_size": large["batch_size"],
                     "gap_at_largest": large["gap_median"],
                     "excess_gap": large["gap_median"] - small["gap_median"]})
    columns = ["gap", "norm", "budget", "smallest_batch_size", "gap_at_smallest",
               "largest_batch_size", "gap_at_largest", "excess_gap"]
    return pd.DataFrame(rows, columns=columns)
