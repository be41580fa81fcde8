"""``lbt-study recommend``: the recommendation of a run directory as text for the terminal."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lbt_study.analysis.outcome import attempt
from lbt_study.analysis.recommend import loo_summary, recommend
from lbt_study.analysis.settings import AnalysisSettings
from lbt_study.errors import UserError
from lbt_study.report import existing_run_dir, tables_of

SHOWN = ("goal", "batch_size", "workers", "learning_rate", "warmup_epochs", "norm",
         "evidence", "measured_steps", "predicted_steps", "measured_seconds",
         "predicted_seconds", "measured_cost", "predicted_cost")


def recommendation_text(run_dir: Path, goal: str | None, workers: int | None,
                        price_per_hour: float | None) -> str:
    """What to run for ``goal`` (every goal when None), the validity of each choice, and the
    leave-one-batch-size-out error of the fitted curve. Raises ``UserError`` when the run
    directory's trials cannot give one (no target, none reached it, no trial with ``workers``)."""
    trials, _, study, _ = tables_of(existing_run_dir(run_dir))
    if study.direction is None or study.target is None:
        raise UserError(f"{run_dir}: the study has no target or no direction, so nothing "
                        "to recommend (a recommendation reaches the target soonest)")
    s = AnalysisSettings(price_per_hour=price_per_hour)
    out = attempt("the recommendation", recommend, trials, study.direction,
                  price_per_hour=price_per_hour, workers=workers, ci=s.ci,
                  statuses=s.frontier_statuses)
    if out.reason:
        raise UserError(f"{run_dir}: {out.reason}")
    r = out.value
    table = r.table if goal is None else r.table[r.table["goal"] == goal]
    lines = [f"target {study.target:g}; B_crit (McCandlish fit) "
             f"{r.b_crit:.4g}" if math.isfinite(r.b_crit) else
             f"target {study.target:g}; no McCandlish fit: {r.fit_reason}"]
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        lines.append(table[list(SHOWN)].to_string(index=False))
    lines += [f"{row.goal}: {row.validity}" for row in table.itertuples()]
    loo = loo_summary(r.loo)
    lines.append(f"leave one batch size out: median |predicted/measured steps - 1| "
                 f"{loo['interpolated']:.0%} interpolated, {loo['extrapolated']:.0%} at the "
                 "edges (extrapolated)")
    return "\n".join(lines)
