"""Learning rate and warmup against batch size: the tuned lr per batch size, the exponent k
of lr_opt ~ B^k with its interval, the rules it contains, and k per normalization."""

from __future__ import annotations

import pandas as pd

from lbt_study.analysis.lr import PROFILE, RULES, WINDOW
from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.document import Item, Reason, Text
from lbt_study.report.framework import Csv, FigurePart, ItemsPart, SectionSpec, TablePart

LR_COLUMNS = ("parameter", "method", "exponent", "exponent_lower", "exponent_upper",
              "coefficient", "r_squared", "n_points", "n_trials", "linear_rule_in_ci",
              "sqrt_rule_in_ci", "constant_in_ci", "exponent_shared_curvature", "curvature_f",
              "curvature_p", "reason")
LR_POINT_COLUMNS = ("batch_size", "n_trials", "lr_min", "lr_max", "learning_rate", "lr_opt",
                    "lr_opt_lower", "lr_opt_upper", "method", "edge", "reason")
RULE_NAMES = {"constant_in_ci": "a constant (k = 0)",
              "sqrt_rule_in_ci": "the square-root rule (k = 0.5)",
              "linear_rule_in_ci": "the linear rule (k = 1)"}


def _intro(a: Analyses) -> str:
    linear, sqrt, constant = (RULES[k] for k in ("linear_rule_in_ci", "sqrt_rule_in_ci",
                                                  "constant_in_ci"))
    fit = a.results.lr.value
    metric = "final_objective" if fit is None else fit.metric
    on = (f"{metric}" if metric == "final_objective" else
          f"{metric}, ln(steps_to_target), since every trial stopped at the target (its "
          "final objective is the target's, whatever the lr); trials that never reached "
          "it are left out")
    best = "peak" if fit is None or fit.direction == "maximize" else "minimum"
    return (f"The tuned learning rate lr_opt of each batch size is the {best} of a parabola in "
            f"log(lr) fitted to its trials' {on} (those within {WINDOW:g} decades of its "
            "best). The "
            "exponent k of lr_opt ~ B^k comes from one model of every trial with its own "
            "curvature and offset per batch size and one optimum line, ln lr_opt = a + k ln B, "
            "fitted by profile least squares, with the "
            f"{a.settings.ci:.0%} profile-likelihood interval of k (equal noise assumed; "
            "-inf or inf: unbounded within k = -3 .. 3). curvature_f and curvature_p test one "
            "shared curvature against one per batch size; exponent_shared_curvature is the k "
            "that shared fit would give. Warmup is a power law through the best trial's "
            "warmup_epochs, unless the design ties warmup to the learning rate. Rules: "
            f"linear k = {linear:g} (Goyal et al. 2017), square-root k = {sqrt:g} (Hoffer et "
            f"al. 2017), constant k = {constant:g} (for warmup in epochs, Goyal et al.).")


def verdict(fit: pd.Series) -> str:
    """Which rules the interval of k contains, in words: all three, "the study does not
    determine k"."""
    known = {name: bool(fit[column]) for column, name in RULE_NAMES.items()
             if pd.notna(fit[column])}
    inside = [name for name, within in known.items() if within]
    outside = [name for name, within in known.items() if not within]
    if len(inside) == len(RULE_NAMES):
        return ("it contains all three rules, " + ", ".join(inside)
                + ": the study does not determine k")
    if not inside:
        return "it contains none of the rules (" + ", ".join(outside) + ")"
    return f"it contains {' and '.join(inside)}, not {' or '.join(outside)}"


def _result(fit: pd.Series, ci: float) -> str:
    """One fit in words: k, how it was found, its interval and the rules inside it."""
    how = (f"a curvature per batch size and one optimum line over {fit['n_trials']} trials "
           f"at {fit['n_points']} batch sizes" if fit["method"] == PROFILE else
           f"a power law through the best trial of {fit['n_points']} batch sizes")
    k = (f"k = {fit['exponent']:.2f}" if pd.notna(fit["exponent"])
         else "no estimate of k (see below)")
    text = f"{fit['parameter']}: {k} from {how}"
    if pd.isna(fit["exponent_lower"]):
        return text + ", no interval."
    text += (f", {ci:.0%} interval [{fit['exponent_lower']:.2f}, "
             f"{fit['exponent_upper']:.2f}]: {verdict(fit)}.")
    if pd.notna(fit.get("curvature_p")):
        shared = ("rejected" if fit["curvature_p"] < 1 - ci else "not rejected")
        text += (f" One shared curvature for all batch sizes: {shared} (F = "
                 f"{fit['curvature_f']:.3g}, p = {fit['curvature_p']:.2g}; that fit would give "
                 f"k = {fit['exponent_shared_curvature']:.2f}).")
    return text


def _words(a: Analyses) -> list[Item]:
    """Each fit's result, then its reason: a Reason where it failed, else a note."""
    fits = a.results.lr.value.fits
    items: list[Item] = [Text(_result(fit, a.settings.ci)) for _, fit in fits.iterrows()
                         if pd.notna(fit["exponent"]) or pd.notna(fit["exponent_lower"])]
    return items + [Reason(f"{fit.parameter}: {fit.reason}") if pd.isna(fit.exponent)
                    else Text(f"Note: {fit.parameter}: {fit.reason}")
                    for fit in fits[fits["reason"].notna()].itertuples()]


def _missing(a: Analyses) -> str | None:
    if a.results.lr.value.fits["reason"].notna().any():
        return None  # the fits' reasons already say why
    return "no batch size has a trial with a learning_rate > 0 and an objective"


def _has_points(a: Analyses) -> bool:
    return len(a.results.lr.value.points) > 0


def _by_norm(a: Analyses) -> bool:
    """Whether the lr was fitted per norm (the study has more than one)."""
    return a.results.lr_by_norm.value is not None


def _norm_fits(a: Analyses) -> pd.DataFrame:
    fits = a.results.lr_by_norm.value.fits
    return fits[fits["parameter"] == "learning_rate"]


SECTION = SectionSpec(
    "Learning rate and warmup against batch size", ("lr",), _intro,
    (TablePart(lambda a: a.results.lr.value.fits, LR_COLUMNS, csv="lr_scaling"),
     ItemsPart(_words),
     TablePart(lambda a: a.results.lr.value.points, LR_POINT_COLUMNS,
               caption="Per batch size: lr_opt, the vertex of the parabola in log(lr), with "
               "Fieller's interval; learning_rate is the best trial's, lr_min and lr_max the "
               "range tried. edge: no peak inside the lrs tried, so lr_opt is the best trial's "
               "lr (a bound on the optimum).", csv="lr_scaling_points", when=_has_points),
     TablePart(_norm_fits, ("norm", *LR_COLUMNS),
               caption="The learning-rate exponent of each normalization on its own (its own "
               "trials, the same free-curvature fit and profile interval).",
               csv="lr_scaling_by_norm", needs="lr_by_norm", when=_by_norm),
     FigurePart("lr_scaling", lambda a: figures.lr_figure(a.results.lr.value, "learning_rate",
                                                          "warmup_epochs"),
                lambda _: "lr_opt per batch size (the vertex of its parabola, with its "
                "interval; hollow: edge, the best trial's lr), the best trial's lr (x), the "
                "free-curvature fit's optimum line and the reference rules through the "
                "smallest batch size; warmup: the best trial's.", _has_points, _missing)),
    (Csv("lr_scaling", "lr", lambda a: a.results.lr.value.fits),
     Csv("lr_scaling_points", "lr", lambda a: a.results.lr.value.points),
     Csv("lr_scaling_by_norm", "lr_by_norm", lambda a: a.results.lr_by_norm.value.fits,
         when=_by_norm),
     Csv("lr_scaling_points_by_norm", "lr_by_norm",
         lambda a: a.results.lr_by_norm.value.points, when=_by_norm)))
