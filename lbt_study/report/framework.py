"""The report's framework: a section is a declaration (``SectionSpec``), built by one
function, ``build_section`` (the words and checks the sections share are in
``lbt_study.report.words``).

A ``SectionSpec`` names its title, the results of ``analyze`` it cannot do without (the first
reason among them replaces the whole section), a function giving its words, its parts in
order (tables, figures, free items; a part that needs a result shows that result's reason
in its place instead) and the full tables it writes as CSV. A result is named by its field
of ``lbt_study.analysis.summary.Results``; a name that is not one fails when the section is
declared, with the valid names. The words read the analysis settings (``Analyses.settings``)
rather than repeating their numbers; the figures only draw what the analyses returned
(``lbt_study.report.figures``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

from lbt_study.analysis.outcome import Outcome
from lbt_study.analysis.summary import Analyses, Results
from lbt_study.report.document import (
    Figure,
    Item,
    Reason,
    Section,
    Table,
    Text,
    display,
)

Check = Callable[[Analyses], bool]
Words = Callable[[Analyses], str]
RESULTS = tuple(f.name for f in fields(Results))
"""The names a section may need: the fields of ``Results``."""


def result_name(name: str) -> str:
    """``name`` if it names a result (a field of ``Results``); raises listing the names."""
    if name not in RESULTS:
        raise ValueError(f"no analysis result is called {name!r}; the results: "
                         f"{', '.join(RESULTS)}")
    return name


def outcome(a: Analyses, name: str) -> Outcome[Any]:
    """The result ``name`` of ``a`` (a field of ``Results``)."""
    return getattr(a.results, name)


def _always(_: Analyses) -> bool:
    return True


def _nothing(_: Analyses) -> list[Item]:
    return []


@dataclass(frozen=True)
class TablePart:
    """A table: ``frame`` of the analyses, shown as text; ``csv`` names its full CSV."""

    frame: Callable[[Analyses], pd.DataFrame]
    columns: Sequence[str] | None = None
    caption: str = ""
    csv: str | None = None
    rows: int | None = None
    when: Check = _always
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        if not self.when(a):
            return []
        columns = None if self.columns is None else list(self.columns)
        return [Table(display(self.frame(a), columns, self.rows), self.caption, self.csv)]


@dataclass(frozen=True)
class FigurePart:
    """A figure drawn ``when`` there is something to draw, else the reason ``otherwise``."""

    name: str
    draw: Callable[[Analyses], bytes]
    caption: Words
    when: Check = _always
    otherwise: Callable[[Analyses], str | None] = lambda _: None
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        if self.when(a):
            return [Figure(self.name, self.draw(a), self.caption(a))]
        reason = self.otherwise(a)
        return [Reason(reason)] if reason else []


@dataclass(frozen=True)
class ItemsPart:
    """Items made by ``make``; with the default, only the reason of ``needs`` (if any)."""

    make: Callable[[Analyses], list[Item]] = _nothing
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        return self.make(a)


Part = TablePart | FigurePart | ItemsPart


@dataclass(frozen=True)
class Csv:
    """The table ``name``.csv, written when result ``key`` has a value and ``when`` holds:
    ``frame`` of the analyses (by default that result itself, a table)."""

    name: str
    key: str
    frame: Callable[[Analyses], pd.DataFrame] | None = None
    when: Check = _always

    def table(self, a: Analyses) -> pd.DataFrame:
        return outcome(a, self.key).value if self.frame is None else self.frame(a)


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report, declared."""

    title: str
    needs: tuple[str, ...]
    intro: Words | None
    parts: tuple[Part, ...]
    csv: tuple[Csv, ...]
    shown: Check = _always
    """Whether the section is in this study's report at all (e.g. only adaptive studies')."""

    def __post_init__(self) -> None:
        for name in (*self.needs, *(p.needs for p in self.parts if p.needs),
                     *(c.key for c in self.csv)):
            result_name(name)


def build_section(spec: SectionSpec, a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """The section ``spec`` declares, and its full tables to write as CSV."""
    blocked = next((outcome(a, k).reason for k in spec.needs if outcome(a, k).reason), None)
    if blocked:
        return Section(spec.title, [Reason(blocked)]), {}
    section = Section(spec.title, [Text(spec.intro(a))] if spec.intro else [])
    said: set[str] = set()
    for part in spec.parts:
        reason = outcome(a, part.needs).reason if part.needs else None
        if reason is None:
            section.items.extend(part.items(a))
        elif part.needs not in said:
            section.items.append(Reason(reason))
            said.add(part.needs)
    tables = {c.name: c.table(a) for c in spec.csv if not outcome(a, c.key).reason and c.when(a)}
    return section, tables
