"""Steps to target against batch size: the Shallue et al. frontier, its regimes, the lines
of perfect scaling, Zhang et al.'s rule and the McCandlish fit."""

from __future__ import annotations

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.document import reasons_of
from lbt_study.report.framework import Csv, FigurePart, ItemsPart, SectionSpec, TablePart
from lbt_study.report.words import ok, pivot_by_norm, statuses_words, target_text

FRONTIER_COLUMNS = ("batch_size", "trial_id", "steps", "steps_lower", "steps_upper",
                    "upper_rank", "examples", "examples_ratio", "step_decrease", "regime",
                    "n_trials", "n_reached", "censored", "reason")


def _intro(a: Analyses) -> str:
    s = a.settings
    return (
        f"Shallue et al. (2018): for each batch size, the fewest steps any trial with status "
        f"{statuses_words(s.frontier_statuses)} needed to first reach the target "
        f"{target_text(a)} (a trial ASHA pruned counts with the steps it reached the target "
        "in, or as not reaching it). Error bars: how far that minimum leans on its fastest trials, "
        f"the {s.ci:.0%} interval of the minimum when the batch size's trials are resampled "
        "with replacement (computed exactly, no seed): the lower end is the point itself, the "
        "upper end the upper_rank-th fastest trial, what the point becomes without its "
        "luckiest trials (unbounded when too few trials reached the target). It is not a "
        "confidence interval for the best-tuned steps, which a handful of trials cannot bound "
        "from below. Lines: perfect scaling through the smallest batch size (steps x B "
        f"constant), {s.zhang_excess:.0%} above it (Zhang et al. 2024), and the McCandlish et "
        "al. (2018) fit S(B) = S_min (1 + B_crit/B), E(B) = E_min (1 + B/B_crit). Regimes: "
        f"perfect scaling while examples stay within {s.perfect_tol:.0%} of the smallest batch "
        f"size's (examples_ratio <= {1 + s.perfect_tol:g}), maximal data parallelism once "
        f"steps fall by less than {s.plateau_tol:.0%} from the previous batch size "
        f"(step_decrease < {s.plateau_tol:g}), diminishing returns in between.")


def _shown(a: Analyses) -> pd.DataFrame:
    """The regimes, with the examples frontier beside them when it was computed."""
    shown, examples = a.results.regimes.value, a.results.examples
    if examples.reason:
        return shown
    return shown.merge(examples.value[["batch_size", "examples", "examples_lower",
                                       "examples_upper"]], on="batch_size", how="left")


def _drawable(a: Analyses) -> bool:
    return bool((a.results.steps.value["steps"] > 0).any()) and not a.results.critical.reason


def _figure(a: Analyses) -> bytes:
    r = a.results
    return figures.steps_figure(r.regimes.value, r.examples.value, r.critical.value.cbs,
                                a.study.target, a.settings.zhang_excess)


def _by_norm(a: Analyses) -> bool:
    frontier = a.results.steps_by_norm
    return not frontier.reason and frontier.value["norm"].nunique() > 1 \
        and bool(frontier.value["steps"].notna().any())


def _by_norm_figure(a: Analyses) -> bytes:
    critical = a.results.critical_by_norm
    return figures.steps_by_norm_figure(a.results.steps_by_norm.value,
                                        pd.DataFrame() if critical.reason else critical.value)


def _by_norm_table(a: Analyses) -> pd.DataFrame:
    """Steps to target per norm (rows) and batch size (columns); "censored" where no trial
    reached the target within its budget."""
    frontier = a.results.steps_by_norm.value
    shown = frontier.assign(steps=frontier["steps"].astype(object).where(
        ~frontier["censored"].eq(True), "censored"))
    return pivot_by_norm(shown, "steps")


def _missing(a: Analyses) -> str:
    return (f"no batch size has a trial with status {ok(a)} that reached the target "
            f"{target_text(a)} with steps > 0: " + reasons_of(a.results.steps.value))


SECTION = SectionSpec(
    "Steps to target against batch size", ("steps", "regimes"), _intro,
    (ItemsPart(needs="examples"),
     FigurePart("steps_to_target", _figure, lambda _: "Steps (left) and examples "
                "(right) to target of the best trial per batch size, coloured by regime.",
                _drawable, _missing),
     TablePart(_shown, FRONTIER_COLUMNS, csv="steps_to_target"),
     FigurePart("steps_by_norm", _by_norm_figure, lambda _: "Steps to target of the fastest "
                "trial per normalization and batch size; dashed: that norm's McCandlish fit "
                "(Critical batch size, per normalization).", _by_norm, needs="steps_by_norm"),
     TablePart(_by_norm_table, caption="Steps to target of the fastest trial per "
               "normalization (rows) and batch size (columns); censored: no trial reached "
               "the target within its budget", csv="steps_by_norm", when=_by_norm,
               needs="steps_by_norm")),
    (Csv("steps_to_target", "steps"), Csv("regimes", "regimes"),
     Csv("steps_by_norm", "steps_by_norm", when=_by_norm),
     Csv("examples_to_target", "examples")))
