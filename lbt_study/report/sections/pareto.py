"""Pareto front: the trials no other beats on both final objective and time to target."""

from __future__ import annotations

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.framework import Csv, FigurePart, SectionSpec, TablePart
from lbt_study.report.words import better, ok, target_text

PARETO_COLUMNS = ("trial_id", "batch_size", "norm", "workers", "learning_rate",
                  "final_objective", "seconds_to_target", "steps_to_target")


def _competing(a: Analyses) -> int:
    """Trials that competed for the Pareto front."""
    return int(a.results.pareto.value["reason"].isna().sum())


def _on_front(a: Analyses) -> pd.DataFrame:
    front = a.results.pareto.value
    return front[front["on_front"]]


def _intro(a: Analyses) -> str:
    return (f"Trials with status {ok(a)} that reached the target {target_text(a)}: "
            f"{_competing(a)} competed, {len(_on_front(a))} on the front ({better(a)} "
            "final_objective, lowest seconds_to_target = training seconds to the first "
            "evaluation reaching the target).")


def _missing(a: Analyses) -> str:
    kinds = a.results.pareto.value["reason"].value_counts()
    return "no trial competed: " + "; ".join(f"{n} trials: {r}" for r, n in kinds.items())


SECTION = SectionSpec(
    "Pareto front: final objective and time to target", ("pareto",), _intro,
    (FigurePart("pareto", lambda a: figures.pareto_figure(a.results.pareto.value,
                                                          "seconds_to_target", "final_objective"),
                lambda _: "Every competing trial; the Pareto front in orange.",
                lambda a: _competing(a) > 0, _missing),
     TablePart(_on_front, PARETO_COLUMNS, "Trials on the front", "pareto",
               when=lambda a: _competing(a) > 0)),
    (Csv("pareto", "pareto"),))
