"""What a report is made of, before it is rendered: sections of text, reasons, tables, figures.

The HTML and Markdown renderers read these and nothing else; table cells are already text
(``display``), with a missing value as a dash and floats to four significant digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MISSING = "—"


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str


@dataclass(frozen=True)
class Reason:
    """Why an analysis or figure is missing, shown in its place."""

    text: str


@dataclass(frozen=True, eq=False)
class Table:
    """A table shown in the report (cells already text)."""

    frame: pd.DataFrame  # already formatted for display
    caption: str = ""
    csv: str | None = None  # the CSV holding the full table


@dataclass(frozen=True)
class Figure:
    """A drawn figure: file stem, PNG bytes, caption."""

    name: str
    png: bytes
    caption: str


Item = Text | Reason | Table | Figure


@dataclass
class Section:
    """A titled part of the report: its items in order."""

    title: str
    items: list[Item] = field(default_factory=list)


def caption_of(table: Table) -> str:
    """A table's caption with the name of its CSV file."""
    csv = f"full table: {table.csv}.csv" if table.csv else ""
    if table.caption and csv:
        return f"{table.caption} ({csv})"
    return table.caption or csv.capitalize()


def fmt(value: Any) -> str:
    """One table cell as text: missing as a dash, floats to 4 significant digits (from 1000
    on, to the unit, written like a whole number of the same size: 512849, not 512,849)."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) or hasattr(value, "dtype") and value.dtype.kind == "f":
        value = float(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:.0f}"
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if hasattr(value, "dtype") and value.dtype.kind == "b":
        return "yes" if value else "no"
    return str(value)


def display(frame: pd.DataFrame, columns: list[str] | None = None,
            rows: int | None = None) -> pd.DataFrame:
    """``frame`` restricted to ``columns`` that exist, every cell formatted as text."""
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    if rows is not None:
        frame = frame.head(rows)
    return pd.DataFrame({c: [fmt(v) for v in frame[c]] for c in frame.columns},
                        columns=list(frame.columns), dtype=object)


def reasons_of(frame: pd.DataFrame, key: str = "batch_size", column: str = "reason") -> str:
    """The distinct row reasons of ``frame``, each with the keys it applies to."""
    if column not in frame.columns:
        return ""
    parts = []
    for reason, rows in frame[frame[column].notna()].groupby(column, sort=False):
        keys = ", ".join(dict.fromkeys(fmt(k) for k in rows[key])) if key in rows else ""
        parts.append(f"{key} {keys}: {reason}" if keys else str(reason))
    return "; ".join(parts)
