"""Argument checks and small helpers shared by the analysis modules.

Two kinds of failure, kept apart. ``CannotCompute``: the tables cannot give this analysis
(a column they lack, too few batch sizes, no trial that reached the target, ...); ``analyze``
shows its message as the analysis' reason. A plain ``ValueError``: the caller passed a bad
argument (a misspelt direction or status, a level outside (0, 1)); like any other error it
propagates, since ``analyze`` passes only checked settings. Each message names the bad value
and the allowed ones, so a mistake fails at once instead of giving an empty or wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from lbt_study.records.schema import DIRECTIONS, STATUSES


class CannotCompute(ValueError):
    """This analysis cannot be computed on these tables; the message says why.

    The one failure an analysis declares: ``lbt_study.analysis.outcome.attempt`` turns it
    into the analysis' reason, and every other exception (a KeyError from a misspelt
    column, a TypeError, ...) propagates as the bug it is.
    """


def check_direction(direction: str, what: str = "direction") -> None:
    """Raise unless ``direction`` is "maximize" or "minimize" (never guessed from a name)."""
    if direction not in DIRECTIONS:
        allowed = ", ".join(map(repr, DIRECTIONS))
        raise ValueError(f"{what} must be one of {allowed}, not {direction!r}")


def missing_columns(table: pd.DataFrame, columns: Iterable[str],
                    name: str = "trials") -> str | None:
    """Why ``table`` (the ``name`` table) cannot serve: the ``columns`` it lacks, e.g. "the
    trials table has no norm, workers columns" (None when it has them all). The one check
    of columns in the analyses: ``require`` and every guard of ``analyze`` word it so."""
    lacking = [str(c) for c in columns if c not in table.columns]
    if not lacking:
        return None
    plural = "s" if len(lacking) > 1 else ""
    return f"the {name} table has no {', '.join(lacking)} column{plural}"


def require(table: pd.DataFrame, columns: Iterable[str], what: str, name: str = "trials") -> None:
    """Raise ``CannotCompute`` if ``table`` lacks any of ``columns`` (``missing_columns``);
    the message also lists the columns present."""
    reason = missing_columns(table, columns, name)
    if reason:
        present = ", ".join(map(str, table.columns)) or "(none)"
        raise CannotCompute(f"{what}: {reason}; columns present: {present}")


def check_fraction(value: float, name: str) -> None:
    """Raise unless 0 < value < 1 (a confidence level)."""
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def as_list(columns: str | Sequence[str]) -> list[str]:
    """A column name or a sequence of names, as a list."""
    return [columns] if isinstance(columns, str) else list(columns)


def eligible(trials: pd.DataFrame, statuses: Sequence[str] | None, what: str) -> pd.DataFrame:
    """The rows of ``trials`` whose status is one of ``statuses`` (all rows for None)."""
    if statuses is None:
        return trials
    for status in as_list(statuses):
        if status not in STATUSES:
            raise ValueError(
                f"{what}: unknown status {status!r}; known: {', '.join(STATUSES)}"
            )
    require(trials, ["status"], what)
    return trials[trials["status"].isin(as_list(statuses))]


def floats(values: pd.Series) -> pd.Series:
    """``values`` as float64 (a missing value becomes NaN), same index."""
    return pd.to_numeric(values).astype("float64")


def group_keys(frame: pd.DataFrame, by: list[str]) -> list[pd.Series]:
    """Keys for ``groupby`` (a constant key for ``by=[]``: one group)."""
    if by:
        return [frame[c] for c in by]
    return [pd.Series(np.zeros(len(frame), dtype=int), index=frame.index)]


def statuses_text(statuses: Sequence[str] | None) -> str:
    return "any status" if statuses is None else f"status in {tuple(as_list(statuses))}"
