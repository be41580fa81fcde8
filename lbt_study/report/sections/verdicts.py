"""Which of the literature's rules held on this workload: the verdicts table."""

from __future__ import annotations

from lbt_study.analysis.summary import Analyses
from lbt_study.analysis.verdicts import HELD, NOT_HELD, UNSURE, UNTESTED, VERDICT_COLUMNS
from lbt_study.report.document import Item, Text
from lbt_study.report.framework import Csv, ItemsPart, SectionSpec, TablePart


def _intro(a: Analyses) -> str:
    return (f"Each claim against what this study measured, at {a.settings.ci:.0%}: an exponent "
            "rule held when the fitted exponent's interval holds the rule's value (not enough "
            "evidence when it holds k = 0, 0.5 and 1 alike, or is unbounded); a difference or "
            "slope held when its interval lies on the claimed side of zero, did not hold on "
            "the other, and is not enough evidence when it holds zero. A claim this study "
            "cannot test says which study would.")


def _counts(a: Analyses) -> list[Item]:
    table = a.results.verdicts.value
    counts = table["verdict"].value_counts()
    words = ", ".join(f"{counts.get(v, 0)} {v}" for v in (HELD, NOT_HELD, UNSURE, UNTESTED))
    return [Text(f"{len(table)} claims: {words}.")]


SECTION = SectionSpec(
    "Which rules held", ("verdicts",), _intro,
    (ItemsPart(_counts),
     TablePart(lambda a: a.results.verdicts.value, VERDICT_COLUMNS,
               "The literature's claims on this workload", "verdicts")),
    (Csv("verdicts", "verdicts"),))
