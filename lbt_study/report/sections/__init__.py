"""The report's sections, in order: one module each, named once in ``ORDER``.

Each module declares ``SECTION``, a ``SectionSpec`` of ``lbt_study.report.framework`` that
renders fields of ``lbt_study.analysis.summary.Results`` (the analyses' DataFrames and
dataclasses) and computes nothing. Adding a section is a module here with its ``SECTION``,
and its name on one line of ``ORDER`` where the section should appear.
"""

from __future__ import annotations

from importlib import import_module

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report.document import Section
from lbt_study.report.framework import FigurePart, SectionSpec, build_section

ORDER = (
    "recommend",
    "verdicts",
    "summary",
    "best",
    "steps",
    "critical",
    "lr",
    "adam",
    "gap",
    "throughput",
    "pareto",
    "adaptive",
    "branched",
)
"""The section modules of this package, in the report's order."""


def _section(name: str) -> SectionSpec:
    """The ``SECTION`` of module ``name`` of this package."""
    spec = getattr(import_module(f"{__name__}.{name}"), "SECTION", None)
    if not isinstance(spec, SectionSpec):
        raise TypeError(f"{__name__}.{name} must declare SECTION, a SectionSpec; got {spec!r}")
    return spec


SECTIONS: tuple[SectionSpec, ...] = tuple(_section(name) for name in ORDER)
FIGURES = tuple(p.name for spec in SECTIONS for p in spec.parts if isinstance(p, FigurePart))
TABLES = tuple(c.name for spec in SECTIONS for c in spec.csv)


def build_sections(a: Analyses) -> tuple[list[Section], dict[str, pd.DataFrame]]:
    """Every section of the report, and the full tables to write as CSV."""
    sections, tables = [], {}
    for spec in SECTIONS:
        if not spec.shown(a):
            continue
        section, more = build_section(spec, a)
        sections.append(section)
        tables.update(more)
    return sections, tables
