"""Throughput against batch size and workers: batch scaling and worker scaling efficiency."""

from __future__ import annotations

from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.framework import Csv, FigurePart, SectionSpec, TablePart
from lbt_study.report.words import has_values, none_because, statuses_words

THROUGHPUT_COLUMNS = ("batch_size", "workers", "trial_id", "throughput", "n_trials",
                      "speedup_vs_smallest_batch", "efficiency_workers", "reason")


def _intro(a: Analyses) -> str:
    return ("throughput: training examples per second (evaluation excluded) of the fastest "
            f"trial with status {statuses_words(a.settings.throughput_statuses)} per (batch "
            "size, workers). speedup_vs_smallest_batch: throughput over that at the smallest "
            "batch size on the same workers. efficiency_workers: throughput(B, w) / (w x "
            "throughput(B, 1)), 1 = perfect scaling over workers at a fixed global batch (as "
            "in Goyal et al. 2017).")


SECTION = SectionSpec(
    "Throughput against batch size and workers", ("throughput",), _intro,
    (TablePart(lambda a: a.results.throughput.value, THROUGHPUT_COLUMNS, csv="throughput"),
     FigurePart("throughput", lambda a: figures.throughput_figure(a.results.throughput.value),
                lambda _: "Throughput, batch scaling and (when measured) worker scaling "
                "efficiency against batch size.", has_values("throughput", "throughput"),
                none_because("no throughput measured", "throughput"))),
    (Csv("throughput", "throughput"),))
