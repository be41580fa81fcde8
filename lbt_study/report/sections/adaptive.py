"""The report's section on an adaptive study (``Study(stop_when=...)``, lbt_study.study.rounds):
the rounds, why it stopped, the compute it spent and the estimated cost of a uniform sweep
of the same precision, and the interval against the trials spent. It renders the
``AdaptiveSummary`` of ``analysis.adaptive.adaptive_summary`` (result ``adaptive`` of
``analyze``) and computes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbt_study.analysis.adaptive import ROUND_COLUMNS, AdaptiveSummary
from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.framework import Csv, FigurePart, SectionSpec, TablePart

COST_CAPTION = (
    "Compute spent by this adaptive study against a uniform per-batch-size sweep of the same "
    "precision, estimated: the uniform sweep gives every batch size as many trials as the "
    "most-tried batch size got here (so every frontier point rests on at least as many "
    "trials), each trial costing the mean examples_seen and train_seconds of this study's "
    "trials at that batch size. The last row is the adaptive study's share.")
PER_BATCH_CAPTION = ("Per batch size: trials spent, their total and mean examples_seen and "
                     "train_seconds, and the estimated uniform sweep's (uniform_*).")


def _summary(a: Analyses) -> AdaptiveSummary:
    return a.results.adaptive.value


ALLOCATION_WORDS = {
    "balanced": "to the least-tried batch sizes (ties: nearest the B_crit estimate), so every "
                "frontier point stays a minimum over as many trials",
    "nearest": "to the batch sizes nearest the B_crit estimate first",
    "influence": "where holding a batch size's frontier point exact shrinks the trial "
                 "bootstrap interval of B_crit most (influence x n0 / (n (n + 1)) for n "
                 "trials)",
}


def _intro(a: Analyses) -> str:
    v = _summary(a)
    rule = v.stop_when
    lr = rule.get("lr_exponent_width")
    lr_words = "" if lr is None else f" and the LR exponent's interval at most {lr:g} wide"
    allocation = rule.get("allocation", "influence")  # studies from before it was a setting
    adjust = rule.get("adjust", "none")
    levels = v.rounds["level"].dropna()
    level = (f"at level {levels.iloc[-1]:.4g} at every look ({adjust}: "
             + ("1 - (1 - ci) / the most looks the budget allows, so the interval it stops "
                "with covers B_crit at the study's level whichever look stops it)"
                if adjust == "bonferroni" else "no adjustment for looking after every round: "
                "stopping the first time an interval is narrow picks intervals that miss)")
             if len(levels) else f"({adjust})")
    return (f"Adaptive rounds: round 0 gave every batch size the study's trials; each later "
            f"round added {rule.get('round_trials') or 'one per batch size'} trials "
            f"{ALLOCATION_WORDS.get(allocation, allocation)}, at most "
            f"{rule.get('max_trials_ratio'):g} times the trials of the least-tried batch "
            f"size, until (hi - lo) / B_crit <= {rule.get('b_crit_rel_width'):g} {level}"
            f"{lr_words} with every batch size at {rule.get('min_trials')} trials or more, "
            f"or {rule.get('max_trials')} trials were spent. Result: {v.stopped}.")


def _width_figure(rounds: pd.DataFrame, target: float) -> bytes:
    """B_crit with its interval (left) and the interval's relative width (right) against
    the trials spent after each round; an unbounded end is drawn as a triangle at the edge
    of the axis (up: unbounded above; down: 0), an infinite width likewise."""
    fig, (left, right) = figures.new_figure(2)
    done = rounds[rounds["b_crit"].notna()]
    x = pd.to_numeric(done["trials_total"]).to_numpy(float)
    est, lo, hi = (done[c].to_numpy(float) for c in ("b_crit", "lower", "upper"))
    ends = np.concatenate([est, lo[np.isfinite(lo) & (lo > 0)], hi[np.isfinite(hi)]])
    bottom, top = ends.min() / 2, ends.max() * 2
    left.vlines(x, np.clip(lo, bottom, top), np.clip(hi, bottom, top), color="#4477aa")
    left.plot(x, est, "o", color="#4477aa", label="B_crit")
    for mask, y, marker, words in ((~np.isfinite(hi), top, "^", "unbounded above"),
                                   (~(lo > 0), bottom, "v", "unbounded below (0)")):
        if mask.any():
            left.plot(x[mask], np.full(mask.sum(), y), marker, color="#4477aa", label=words)
    left.set_yscale("log", base=2)
    left.set(xlabel="trials spent", ylabel="B_crit and its interval", title="B_crit by round")
    width = done["rel_width"].to_numpy(float)
    shown = np.isfinite(width)
    right.plot(x[shown], width[shown], "o-", color="#cc6677", label="(hi - lo) / B_crit")
    ceiling = max([target, *width[shown]]) * 1.5
    if (~shown).any():
        right.plot(x[~shown], np.full((~shown).sum(), ceiling), "^", color="#cc6677",
                   label="unbounded (inf)")
    right.axhline(target, ls="--", color="#555555", label=f"stop at <= {target:g}")
    right.set(xlabel="trials spent", ylabel="relative width", title="Interval width by round",
              xlim=left.get_xlim(), ylim=(0, ceiling * 1.1))
    for ax in (left, right):
        ax.legend(fontsize=8)
    return figures.to_png(fig)


def _drawable(a: Analyses) -> bool:
    return bool(_summary(a).rounds["b_crit"].notna().any())


def _spent(a: Analyses) -> bool:
    return len(_summary(a).spent) > 0


def _per_batch(a: Analyses) -> bool:
    return len(_summary(a).per_batch) > 0


SECTION = SectionSpec(
    "Adaptive study: rounds and compute", ("adaptive",), _intro,
    (TablePart(lambda a: _summary(a).rounds, ROUND_COLUMNS,
               "One row per round: the trials it added (per batch size) and, with the "
               "influence allocation, the influences (doublings of interval width) it went "
               "by, the trials spent after it, B_crit with its interval, the interval's "
               "level and relative width (and the LR exponent's interval width when the rule "
               "asks), and the decision taken then.",
               csv="adaptive_rounds"),
     FigurePart("adaptive_width",
                lambda a: _width_figure(_summary(a).rounds,
                                        _summary(a).stop_when["b_crit_rel_width"]),
                lambda _: "B_crit's interval and its relative width against the trials spent.",
                _drawable, lambda _: "no round has a B_crit estimate yet"),
     TablePart(lambda a: _summary(a).spent, caption=COST_CAPTION, csv="adaptive_cost",
               when=_spent),
     TablePart(lambda a: _summary(a).per_batch, caption=PER_BATCH_CAPTION,
               csv="adaptive_cost_per_batch", when=_per_batch)),
    (Csv("adaptive_rounds", "adaptive", lambda a: _summary(a).rounds),
     Csv("adaptive_cost", "adaptive", lambda a: _summary(a).spent, _spent),
     Csv("adaptive_cost_per_batch", "adaptive", lambda a: _summary(a).per_batch, _per_batch)),
    shown=lambda a: bool(a.study.meta.get("stop_when")))
