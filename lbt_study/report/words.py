"""Words and checks the report's sections share: the target, the better end of the
objective, the statuses that compete, a table by norm and batch size for display, and
whether a result's table has values (else its row reasons, in words)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report.document import fmt, reasons_of
from lbt_study.report.framework import Check, outcome, result_name


def target_text(a: Analyses) -> str:
    """The target as text ("none" when the study has none)."""
    return "none" if a.study.target is None else f"{a.study.target:g}"


def better(a: Analyses) -> str:
    """"highest" or "lowest": the better end of the objective."""
    return "highest" if a.study.direction == "maximize" else "lowest"


def statuses_words(statuses: Sequence[str]) -> str:
    """("ok",) as "ok", ("ok", "pruned") as "ok or pruned"."""
    names = list(statuses)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def ok(a: Analyses) -> str:
    """The statuses that compete, in words."""
    return statuses_words(a.settings.statuses)


def pivot_by_norm(frame: pd.DataFrame, values: str, within: Sequence[str] = ()) -> pd.DataFrame:
    """``values`` with a row per norm (and ``within`` value) and a column per batch size
    ("B=.."), for display."""
    index = ["norm", *within]
    pivot = frame.pivot_table(index=index, columns="batch_size", values=values,
                              aggfunc="first", dropna=False)
    pivot.columns = [f"B={fmt(c)}" for c in pivot.columns]
    return pivot.reset_index()


def has_values(key: str, column: str) -> Check:
    """Whether column ``column`` of result ``key`` (a table) has a value."""
    result_name(key)
    return lambda a: bool(outcome(a, key).value[column].notna().any())


def none_because(words: str, key: str, by: str = "batch_size") -> Callable[[Analyses], str]:
    """``words``, then the row reasons of result ``key`` (a table) by ``by``."""
    result_name(key)
    return lambda a: f"{words}: " + reasons_of(outcome(a, key).value, by)
