"""Critical batch size: every estimate of the steps frontier with its interval and how it was
found, the noise scale beside it, and B_crit at each of the study's targets. Every word of
the critical table is here: the methods' names, the ``how`` column, the intro."""

from __future__ import annotations

import math

import pandas as pd

from lbt_study.analysis.by_target import crossings_disagree
from lbt_study.analysis.scaling import B0_DOMINATES, CriticalBatchSize
from lbt_study.analysis.summary import Analyses, AnalysisSettings
from lbt_study.report import figures
from lbt_study.report.document import Item, Text
from lbt_study.report.framework import Csv, FigurePart, ItemsPart, SectionSpec, TablePart

CRITICAL_COLUMNS = ("method", "b_crit", "lower", "upper", "ratio_to_b_crit", "s_min", "e_min",
                    "how", "reason")
COVARIANCE = ("which takes every frontier point as equally noisy, judged from their scatter "
              "about the curve")
"""What the fit's covariance interval assumes (the covariance row's how, and the intro)."""


def critical_labels(s: AnalysisSettings) -> dict[str, str]:
    """What each method of ``CriticalBatchSize.estimates`` is called in the report."""
    return {"mccandlish_fit": "McCandlish et al. 2018 fit",
            "mccandlish_fit_cov": "McCandlish et al. 2018 fit, covariance interval",
            "zhang_20pct": f"Zhang et al. 2024 {s.zhang_excess:.0%} rule",
            "gns_simple": "gradient noise scale B_simple (measured)"}


def critical_how(cbs: CriticalBatchSize, s: AnalysisSettings, gns_words: str) -> dict[str, str]:
    """How each row of ``CriticalBatchSize.estimates`` was found, in words."""
    fit = "S(B) = S_min (1 + B_crit/B) fitted to the steps frontier"
    boot = cbs.bootstrap
    if boot is None:
        interval = f"{cbs.ci:.0%} interval from the fit's covariance"
    elif cbs.interval == "residual bootstrap-t":
        interval = (f"{cbs.ci:.0%} studentized interval of the fit redone on {boot.n_boot} "
                    f"residual bootstrap resamples (the frontier's residuals about the curve "
                    f"resampled, seed {boot.seed})")
    else:
        interval = (f"{cbs.ci:.0%} percentile interval of the fit redone on {boot.n_boot} "
                    f"trial-level bootstrap resamples (trials resampled within each batch "
                    f"size, seed {boot.seed})")
    e = s.zhang_excess
    b0 = f"B0 = {cbs.b0:g}; " if math.isfinite(cbs.b0) else ""
    return {"mccandlish_fit": f"{fit}; {interval}",
            "mccandlish_fit_cov": f"the same fit; {cbs.ci:.0%} interval from the fit's "
                                  f"covariance, {COVARIANCE}",
            "zhang_20pct": f"steps {e:.0%} above perfect scaling from the smallest B ({b0}on "
                           f"a McCandlish curve {1 + e:g} B0 + {e:g} B_crit)",
            "gns_simple": gns_words}


def critical_table(a: Analyses) -> pd.DataFrame:
    """The estimates of result ``critical`` with how each was found (``CRITICAL_COLUMNS``):
    critical_batch_size.csv."""
    found = a.results.critical.value
    how = critical_how(found.cbs, a.settings, found.gns_how or "no measurement")
    table = found.table.assign(how=found.table["method"].map(how))
    return table[list(CRITICAL_COLUMNS)]


def _intro(a: Analyses) -> str:
    e = a.settings.zhang_excess
    return ("McCandlish et al. (2018): steps and examples trade off as "
            "(S/S_min - 1)(E/E_min - 1) = 1 with B_crit = E_min/S_min, and the simple gradient "
            "noise scale B_simple = tr(Sigma)/|G|^2 predicts B_crit. Zhang et al. (2024): the "
            f"batch size at which steps to target are {e:.0%} above perfect linear scaling; "
            f"on an exact McCandlish curve that is {1 + e:g} B0 + {e:g} B_crit (B0: the "
            f"smallest batch size measured), so it is never below {1 + e:g} B0 and moves "
            f"with where the sweep starts. {_interval_words(a)} ratio_to_b_crit: the "
            "estimate over the fitted B_crit. A dash means not computed; the reason column "
            "says why.")


def _interval_words(a: Analyses) -> str:
    """How the fit's interval was computed, in one sentence."""
    cbs = a.results.critical.value.cbs
    boot = cbs.bootstrap
    if boot is None:
        return (f"The fit's {cbs.ci:.0%} interval comes from its covariance (the scatter of "
                "the frontier points about the curve).")
    if cbs.interval == "residual bootstrap-t":
        return (f"The fit's {cbs.ci:.0%} interval: a studentized residual bootstrap "
                f"({boot.n_boot} resamples, seed {boot.seed}): the frontier points' residuals "
                "about the fitted curve resampled onto it, the curve refitted, and the "
                "bootstrap-t quantiles of (refit - fit) / its standard error taken (a refit "
                "running off the batch sizes measured counts as unbounded). It reads the "
                "frontier's scatter about the curve, not the trials behind each point: the "
                "fastest of n trials is kept by two thirds of trial resamples, which made the "
                f"old trial bootstrap too narrow. The covariance row is the same fit's "
                f"textbook interval, {COVARIANCE}.")
    return (f"The fit's {cbs.ci:.0%} interval: the trials of each batch size were resampled "
            f"with replacement {boot.n_boot} times (seed {boot.seed}), the fastest per batch "
            "size retaken and the curve refitted each time; it is the middle "
            f"{cbs.ci:.0%} of those refits (a refit running off the batch sizes measured "
            f"counts as unbounded). The covariance row is the same fit's textbook interval, "
            f"{COVARIANCE}.")


def _notes(a: Analyses) -> list[Item]:
    """The Zhang flag, and B_simple against B_crit, in words."""
    cbs = a.results.critical.value.cbs
    items: list[Item] = []
    if cbs.zhang_b0_share > B0_DOMINATES:
        items.append(Text(f"Note: Zhang et al. 2024 rule: {cbs.zhang_reason}."))
    ratios = a.results.critical.value.gns_ratio
    shown = ratios[ratios["ratio_lower"].notna()] if len(ratios) else ratios
    if len(shown):
        words = {"at_crossing": "at the crossing", "mean_to_crossing":
                 "averaged over the probed evaluations up to the crossing"}
        parts = [f"{words[r.measure]} {r.ratio:.3g} [{r.ratio_lower:.3g}, {r.ratio_upper:.3g}]"
                 f" (single trials {r.ratio_min:.3g} to {r.ratio_max:.3g}), "
                 f"{'holds' if r.ratio_lower <= 1 <= r.ratio_upper else 'excludes'} 1"
                 for r in shown.itertuples()]
        items.append(Text(f"B_simple / B_crit, the median over the frontier's trials with its "
                          f"{a.settings.ci:.0%} interval: {'; '.join(parts)}. McCandlish et al. "
                          "(2018) predict B_crit close to B_simple: a reading whose interval "
                          "holds 1 is consistent with that, one that excludes 1 is not."))
    elif pd.notna(cbs.gns) and pd.notna(cbs.b_crit_fit):
        items.append(Text(f"B_simple / B_crit = {cbs.gns / cbs.b_crit_fit:.3g} (B_simple "
                          f"{cbs.gns:.4g}, B_crit {cbs.b_crit_fit:.4g}), without an interval, "
                          "so not set against McCandlish et al.'s (2018) prediction."))
    return items


def _shown(a: Analyses) -> pd.DataFrame:
    table = critical_table(a)
    labels = table["method"].map(critical_labels(a.settings)).fillna(table["method"])
    return table.assign(method=labels)


def _gns_caption(a: Analyses) -> str:
    curves = a.results.gns_curves.value
    if curves.fallback:
        return ("None of the best trials measured the noise scale: B_simple over training "
                "for the best trial at each batch size among those that measured it "
                "(more than one worker, or accumulation steps).")
    return (f"Gradient noise scale B_simple ({curves.source}) over training, for the best "
            "trial (by final_objective) at each batch size that measured it.")


BY_TARGET_CAPTION = (
    "The McCandlish B_crit at each of the study's targets: the history measured again at each "
    "threshold (the crossing interpolated), the frontier retaken and the curve refitted, with "
    "the interval method of the table above. b_crit_ratio: B_crit over the easiest "
    "target's, with its paired interval (ratio_lower, ratio_upper: a trial bootstrap in which "
    "each resample measures the same trials at every target).")


def _target_words(a: Analyses) -> list[Item]:
    """Each target's paired ratio in words: whether its interval excludes 1, and only then
    the literature beside it."""
    table = a.results.critical_by_target.value
    if "ratio_lower" not in table:
        return []
    easiest = table.loc[table["b_crit_ratio"].eq(1.0) & table["ratio_lower"].isna(), "target"]
    if easiest.empty:
        return []
    base, items = float(easiest.iloc[0]), []
    for row in table[table["ratio_lower"].notna()].itertuples():
        shown = (f"B_crit at target {row.target:g} / at {base:g} = {row.b_crit_ratio:.3g}, "
                 f"{a.settings.ci:.0%} paired interval [{row.ratio_lower:.3g}, "
                 f"{row.ratio_upper:.3g}]")
        if row.ratio_lower <= 1 <= row.ratio_upper:
            items.append(Text(f"{shown}: it contains 1, so these trials do not show B_crit "
                              "changing between the two targets."))
            continue
        way = "larger" if row.ratio_lower > 1 else "smaller"
        agrees = ("as McCandlish et al. (2018) and Zhang et al. (2024) find" if way == "larger"
                  else "against McCandlish et al. (2018) and Zhang et al. (2024), who find it "
                  "grows as the target gets harder")
        items.append(Text(f"{shown}: it excludes 1, B_crit is {way} at the harder target, "
                          f"{agrees}."))
    return items
GNS_CAPTION = (
    "The noise scale of the best trial per batch size: gns_at_target (the evaluation-time "
    "probe at the evaluation that reached the target), final_gns_probe (at the last "
    "evaluation) and "
    "final_gns_simple (the DDP / accumulation estimator, where measured)")


def _crossing_words(a: Analyses) -> list[Item]:
    """Which rule the table above used, and a sentence when the rules disagree."""
    table = a.results.critical_by_crossing.value
    rule = a.study.target_crossing
    items: list[Item] = [Text(
        f"The table above measures the target's crossing by the {rule!r} rule "
        f"(target_crossing; {CROSSING_RULES}). The same trials under both rules:")]
    if crossings_disagree(table):
        shown = "; ".join(f"{r}: {b:.4g} [{lo:.4g}, {hi:.4g}]" for r, b, lo, hi in zip(
            table["target_crossing"], table["b_crit"], table["lower"], table["upper"],
            strict=True))
        items.append(Text(f"Note: the two rules disagree beyond their intervals ({shown}): "
                          "on this study B_crit depends on which evaluation counts as "
                          "reaching the target more than on the trials resampled; read it "
                          "with the rule named."))
    return items


CROSSING_RULES = ("first: the first evaluation that reaches the target, Shallue et al. 2018's "
                  "steps to result; confirmed: the first whose next evaluation reaches it "
                  "too")
CROSSING_CAPTION = ("The McCandlish B_crit at the study's target under each crossing rule, "
                    "the history measured again under each (the same trials, the same "
                    "bootstrap resamples).")


NORM_CAPTION = ("The McCandlish B_crit of each normalization on its own: its trials' frontier "
                "(the fastest per batch size), the fit and its bootstrap interval, as "
                "above; censored: batch sizes none of whose trials reached the target within "
                "the budget, left out of that norm's fit.")


GNS_RATIO_CAPTION = (
    "B_simple of the frontier's trials (the fastest per batch size) beside the fitted B_crit: "
    "at_crossing reads the probe at the evaluation where each trial crosses the target "
    "(gns_at_target), mean_to_crossing its mean over the evaluations the probe measured up "
    "to it (gns_mean_to_target; step 0 only under gns_probe_schedule 'evaluation'). gns: the "
    "median over those trials, its interval from resampling them; ratio = gns / b_crit, its "
    "interval from each resampled median over one "
    "of B_crit's bootstrap refits (independent resamples); ratio_min, ratio_max: the single "
    "trials'.")


def _gns_ratio(a: Analyses) -> bool:
    return len(a.results.critical.value.gns_ratio) > 0


def _by_norm(a: Analyses) -> bool:
    return len(a.results.critical_by_norm.value) > 0


def _by_target(a: Analyses) -> bool:
    return len(a.results.critical_by_target.value) > 0


def _gns(a: Analyses) -> bool:
    return len(a.results.gns.value) > 0


SECTION = SectionSpec(
    "Critical batch size", ("critical",), _intro,
    (TablePart(_shown, CRITICAL_COLUMNS, csv="critical_batch_size"),
     ItemsPart(_notes),
     TablePart(lambda a: a.results.critical_by_norm.value, caption=NORM_CAPTION,
               csv="critical_by_norm", needs="critical_by_norm", when=_by_norm),
     ItemsPart(_crossing_words, needs="critical_by_crossing"),
     TablePart(lambda a: a.results.critical_by_crossing.value, caption=CROSSING_CAPTION,
               csv="critical_by_crossing", needs="critical_by_crossing"),
     TablePart(lambda a: a.results.critical_by_target.value, caption=BY_TARGET_CAPTION,
               csv="critical_by_target", needs="critical_by_target", when=_by_target),
     ItemsPart(_target_words, needs="critical_by_target"),
     TablePart(lambda a: a.results.critical.value.gns_ratio, caption=GNS_RATIO_CAPTION,
               csv="gns_vs_b_crit", when=_gns_ratio),
     TablePart(lambda a: a.results.gns.value, caption=GNS_CAPTION, csv="gns", when=_gns,
               needs="gns"),
     FigurePart("gns", lambda a: figures.gns_figure(a.results.gns_curves.value.rows),
                _gns_caption, needs="gns_curves")),
    (Csv("critical_batch_size", "critical", critical_table),
     Csv("critical_by_target", "critical_by_target", when=_by_target),
     Csv("critical_by_crossing", "critical_by_crossing"),
     Csv("critical_by_norm", "critical_by_norm", when=_by_norm),
     Csv("critical_batch_size_points", "critical",
         lambda a: a.results.critical.value.cbs.points),
     Csv("gns", "gns", when=_gns),
     Csv("gns_vs_b_crit", "critical", lambda a: a.results.critical.value.gns_ratio,
         when=_gns_ratio)))
