"""What to run: the recommendation for each goal, and how well the fitted curve predicts a
batch size it was not fitted to (leave one batch size out)."""

from __future__ import annotations

import math

import pandas as pd

from lbt_study.analysis.recommend import RECOMMEND_COLUMNS, loo_summary
from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.document import Item, Text
from lbt_study.report.framework import Csv, FigurePart, ItemsPart, SectionSpec, TablePart
from lbt_study.report.words import target_text

GOAL_WORDS = {"steps": "fewest steps", "examples": "fewest examples",
              "time": "least training time", "cost": "least cost"}


def _intro(a: Analyses) -> str:
    r = a.results.recommendation.value
    price = (f"{r.price_per_hour:g} per device-hour" if r.price_per_hour is not None
             else "no price given (lbt-study report or recommend --price-per-hour X)")
    workers = "every trial" if r.workers is None else f"trials with {r.workers} workers"
    return (f"For each goal, the measured batch size whose fastest trial reached the target "
            f"{target_text(a)} with the least of it, and that trial's settings ({workers}). "
            "Time is training seconds to the target (evaluation excluded); cost is that "
            f"x workers x the price ({price}). measured_*: that trial; predicted_*: the "
            "McCandlish fit S(B) = S_min (1 + B_crit/B) at that batch size (examples = S B; "
            "seconds and cost at the trial's own seconds per step). A choice is never a "
            "batch size that was not measured; 'not enough evidence' when the runner-up lies "
            "within the choice's resampling interval (the frontier's upper end).")


def _sentences(a: Analyses) -> list[Item]:
    r = a.results.recommendation.value
    items: list[Item] = []
    for _, row in r.table.iterrows():
        goal = GOAL_WORDS[row["goal"]]
        if not isinstance(row["batch_size"], float) or math.isnan(row["batch_size"]):
            items.append(Text(f"{goal.capitalize()}: no recommendation ({row['validity']})."))
            continue
        items.append(Text(
            f"{goal.capitalize()}: B = {row['batch_size']:g}, {row['workers']:g} workers, "
            f"learning rate {row['learning_rate']:.3g}, norm {row['norm']} "
            f"({row['evidence']}; {row['validity']})."))
    loo = loo_summary(r.loo)
    items.append(Text(
        "Leave one batch size out: the McCandlish fit to the other batch sizes predicts a "
        f"batch size's steps within a median {loo['interpolated']:.0%} inside the range "
        f"fitted and {loo['extrapolated']:.0%} at its edges (extrapolated)."))
    return items


def _table(a: Analyses) -> pd.DataFrame:
    return a.results.recommendation.value.table


def _loo(a: Analyses) -> pd.DataFrame:
    return a.results.recommendation.value.loo


SECTION = SectionSpec(
    "What to run", ("recommendation",), _intro,
    (ItemsPart(_sentences),
     TablePart(_table, RECOMMEND_COLUMNS, "The recommendation per goal", "recommendation"),
     TablePart(_loo, None, "Leave one batch size out: the steps each batch size's fit to the "
               "others predicts", "leave_one_out"),
     FigurePart("leave_one_out", lambda a: figures.loo_figure(_loo(a)),
                lambda _: "Leave one batch size out: predicted / measured steps to target - 1 "
                "per batch size; open markers are extrapolations beyond the batch sizes "
                "fitted.", lambda a: bool(_loo(a)["relative_error"].notna().any()))),
    (Csv("recommendation", "recommendation", _table), Csv("leave_one_out", "recommendation",
                                                           _loo)))
