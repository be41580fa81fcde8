"""Study summary: what was asked and what came back, the fixed settings, the errors."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report.document import MISSING, Item, Reason, Text, fmt
from lbt_study.report.framework import Csv, ItemsPart, SectionSpec, TablePart
from lbt_study.report.words import target_text


def summary_rows(a: Analyses) -> pd.DataFrame:
    """What was asked and what came back, one (field, value) row each."""
    meta, t = a.study.meta, a.trials
    counts = a.results.status_counts.value
    by_status = ", ".join(f"{s} {n}" for s, n in zip(counts["status"], counts["trials"],
                                                      strict=True) if n) or "none"
    objective = meta.get("objective")
    rows = [
        ("study name", meta.get("name", "unknown")),
        ("workload", meta.get("workload", "unknown")),
        ("objective", "final_objective: the workload's objective on the validation set"
                      + (f" ({objective})" if objective else "")),
        ("direction", a.study.direction or "unknown"),
        ("target", target_text(a)),
        ("budget", _budgets_text(a)),
        ("trials requested", meta.get("trials", "unknown")),
        ("trials finished (in the table)", f"{len(t)}: {by_status}"),
        ("batch sizes", _distinct(t, "batch_size")),
        ("normalizations", _distinct(t, "norm")),
        ("workers", _distinct(t, "workers")),
        ("evaluations (history rows)", len(a.history)),
        ("study created", meta.get("created", "unknown")),
        ("trials table last modified (file time)", a.study.results_written or "unknown"),
        ("trial wall time, summed (s)", _sum(t, "wall_seconds")),
        ("training time, summed (s)", _sum(t, "train_seconds")),
        ("early stopping (ASHA)", _json(meta.get("asha")) if "asha" in meta else "unknown"),
        ("sampler", meta.get("sampler", "unknown")),
        ("lbt-study version", meta.get("lbt_study_version", "unknown")),
    ]
    return pd.DataFrame(rows, columns=["field", "value"])


def _budgets_text(a: Analyses) -> str:
    """The budgets the trials ran under, each with its setting and trials."""
    used = a.results.budgets.value
    if used is None or used.empty:
        return MISSING
    text = "; ".join(f"{setting} ({n} trials)" for setting, n in
                     zip(used["setting"], used["n_trials"], strict=True))
    if used["budget"].nunique() > 1:
        text += ("; the best trials, frontiers and fits pool the budgets, the generalization "
                 "gap section compares them")
    return text


def _problems_and_notes(a: Analyses) -> list[Item]:
    return [*(Reason(p) for p in a.study.problems), *(Text(f"Note: {n}") for n in a.notes)]


def _fixed(a: Analyses) -> pd.DataFrame:
    fixed = a.study.meta.get("fixed")
    rows = [(str(k), _json(v)) for k, v in fixed.items()] if isinstance(fixed, dict) else []
    return pd.DataFrame(rows, columns=["setting", "value"])


def _distinct(table: pd.DataFrame, column: str) -> str:
    """The distinct values of ``column``, sorted, as one line."""
    if column not in table.columns or table[column].dropna().empty:
        return MISSING
    return ", ".join(fmt(v) for v in sorted(table[column].dropna().unique()))


def _sum(table: pd.DataFrame, column: str) -> str:
    """The sum of ``column`` as text (a dash when it is missing or empty)."""
    if column not in table.columns:
        return MISSING
    return fmt(float(pd.to_numeric(table[column]).sum(min_count=1)))


def _json(value: Any) -> str:
    """A setting's value as JSON text."""
    return json.dumps(value, default=str, sort_keys=True)


SECTION = SectionSpec(
    "Study summary", (), None,
    (ItemsPart(_problems_and_notes),
     TablePart(summary_rows),
     TablePart(lambda a: a.results.status_counts.value, caption="Trials by status",
               csv="status_counts"),
     TablePart(_fixed, caption="Fixed settings (shared by every trial)",
               when=lambda a: not _fixed(a).empty),
     TablePart(lambda a: a.results.errors.value, rows=20, caption="Errors of failed trials "
               "(distinct messages, most frequent first; at most 20)",
               when=lambda a: not a.results.errors.value.empty)),
    (Csv("status_counts", "status_counts"),))
