"""The report's sections: each a declaration, all built by one function, ``build_section``.

A ``SectionSpec`` names its title, the results of ``analyze`` it cannot do without (the first
reason among them replaces the whole section), a function giving its words, its parts in
order (tables, figures, free items; a part that needs a result shows that result's reason
in its place instead) and the full tables it writes as CSV. The words read the analysis
settings (``Analyses.settings``) rather than repeating their numbers; the figures only draw
what the analyses returned (``lbt_study.report.figures``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lbt_study.analysis.lr import JOINT, RULES, WINDOW
from lbt_study.analysis.scaling import B0_DOMINATES
from lbt_study.analysis.summary import GAP_COLUMNS, Analyses, AnalysisSettings
from lbt_study.report import figures
from lbt_study.report.document import (
    MISSING,
    Figure,
    Item,
    Reason,
    Section,
    Table,
    Text,
    display,
    fmt,
    reasons_of,
)

Check = Callable[[Analyses], bool]
Words = Callable[[Analyses], str]


def _always(_: Analyses) -> bool:
    return True


def _nothing(_: Analyses) -> list[Item]:
    return []


@dataclass(frozen=True)
class TablePart:
    """A table: ``frame`` of the analyses, shown as text; ``csv`` names its full CSV."""

    frame: Callable[[Analyses], pd.DataFrame]
    columns: Sequence[str] | None = None
    caption: str = ""
    csv: str | None = None
    rows: int | None = None
    when: Check = _always
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        if not self.when(a):
            return []
        columns = None if self.columns is None else list(self.columns)
        return [Table(display(self.frame(a), columns, self.rows), self.caption, self.csv)]


@dataclass(frozen=True)
class FigurePart:
    """A figure drawn ``when`` there is something to draw, else the reason ``otherwise``."""

    name: str
    draw: Callable[[Analyses], bytes]
    caption: Words
    when: Check = _always
    otherwise: Callable[[Analyses], str | None] = lambda _: None
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        if self.when(a):
            return [Figure(self.name, self.draw(a), self.caption(a))]
        reason = self.otherwise(a)
        return [Reason(reason)] if reason else []


@dataclass(frozen=True)
class ItemsPart:
    """Items made by ``make``; with the default, only the reason of ``needs`` (if any)."""

    make: Callable[[Analyses], list[Item]] = _nothing
    needs: str | None = None

    def items(self, a: Analyses) -> list[Item]:
        return self.make(a)


Part = TablePart | FigurePart | ItemsPart


@dataclass(frozen=True)
class Csv:
    """The table ``name``.csv: ``pick`` of result ``key``, written when it has a value."""

    name: str
    key: str
    pick: Callable[[Any], pd.DataFrame] = lambda value: value
    when: Callable[[Any], bool] = lambda _: True


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report, declared."""

    title: str
    needs: tuple[str, ...]
    intro: Words | None
    parts: tuple[Part, ...]
    csv: tuple[Csv, ...]
    shown: Check = _always
    """Whether the section is in this study's report at all (e.g. only adaptive studies')."""


def build_section(spec: SectionSpec, a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """The section ``spec`` declares, and its full tables to write as CSV."""
    blocked = next((a.results[k].reason for k in spec.needs if a.results[k].reason), None)
    if blocked:
        return Section(spec.title, [Reason(blocked)]), {}
    section = Section(spec.title, [Text(spec.intro(a))] if spec.intro else [])
    said: set[str] = set()
    for part in spec.parts:
        reason = a.results[part.needs].reason if part.needs else None
        if reason is None:
            section.items.extend(part.items(a))
        elif part.needs not in said:
            section.items.append(Reason(reason))
            said.add(part.needs)
    tables = {c.name: c.pick(a.value(c.key)) for c in spec.csv
              if not a.results[c.key].reason and c.when(a.value(c.key))}
    return section, tables


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


# ---------------------------------------------------------------------------------------------
# Words shared by the sections


def target_text(a: Analyses) -> str:
    """The target as text ("none" when the study has none)."""
    return "none" if a.study.target is None else f"{a.study.target:g}"


def better(a: Analyses) -> str:
    """"highest" or "lowest": the better end of the objective."""
    return "highest" if a.study.direction == "maximize" else "lowest"


def statuses_words(statuses: Sequence[str]) -> str:
    """("ok",) as "ok", ("ok", "pruned") as "ok or pruned"."""
    names = list(statuses)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def ok(a: Analyses) -> str:
    """The statuses that compete, in words."""
    return statuses_words(a.settings.statuses)


def has_values(key: str, column: str) -> Check:
    """Whether column ``column`` of result ``key`` has a value."""
    return lambda a: bool(a.value(key)[column].notna().any())


def none_because(words: str, key: str, by: str = "batch_size") -> Callable[[Analyses], str]:
    """``words``, then the row reasons of result ``key`` by ``by``."""
    return lambda a: f"{words}: " + reasons_of(a.value(key), by)


def pivot_by_norm(frame: pd.DataFrame, values: str, within: Sequence[str] = ()) -> pd.DataFrame:
    """``values`` with a row per norm (and ``within`` value) and a column per batch size
    ("B=.."), for display."""
    index = ["norm", *within]
    pivot = frame.pivot_table(index=index, columns="batch_size", values=values,
                              aggfunc="first", dropna=False)
    pivot.columns = [f"B={fmt(c)}" for c in pivot.columns]
    return pivot.reset_index()


# ---------------------------------------------------------------------------------------------
# Study summary


def summary_rows(a: Analyses) -> pd.DataFrame:
    """What was asked and what came back, one (field, value) row each."""
    meta, t = a.study.meta, a.trials
    counts = a.value("status_counts")
    by_status = ", ".join(f"{s} {n}" for s, n in zip(counts["status"], counts["trials"],
                                                      strict=True) if n) or "none"
    objective = meta.get("objective")
    rows = [
        ("study name", meta.get("name", "unknown")),
        ("workload", meta.get("workload", "unknown")),
        ("objective", "final_objective: the workload's objective on the validation set"
                      + (f" ({objective})" if objective else "")),
        ("direction", a.study.direction or "unknown"),
        ("target", target_text(a)),
        ("budget", _budgets_text(a)),
        ("trials requested", meta.get("trials", "unknown")),
        ("trials finished (in the table)", f"{len(t)}: {by_status}"),
        ("batch sizes", _distinct(t, "batch_size")),
        ("normalizations", _distinct(t, "norm")),
        ("workers", _distinct(t, "workers")),
        ("evaluations (history rows)", len(a.history)),
        ("study created", meta.get("created", "unknown")),
        ("trials table last modified (file time)", a.study.results_written or "unknown"),
        ("trial wall time, summed (s)", _sum(t, "wall_seconds")),
        ("training time, summed (s)", _sum(t, "train_seconds")),
        ("early stopping (ASHA)", _json(meta.get("asha")) if "asha" in meta else "unknown"),
        ("sampler", meta.get("sampler", "unknown")),
        ("lbt-study version", meta.get("lbt_study_version", "unknown")),
    ]
    return pd.DataFrame(rows, columns=["field", "value"])


def _budgets_text(a: Analyses) -> str:
    """The budgets the trials ran under, each with its setting and trials."""
    used = a.value("budgets")
    if used is None or used.empty:
        return MISSING
    text = "; ".join(f"{setting} ({n} trials)" for setting, n in
                     zip(used["setting"], used["n_trials"], strict=True))
    if used["budget"].nunique() > 1:
        text += ("; the best trials, frontiers and fits pool the budgets, the generalization "
                 "gap section compares them")
    return text


def _problems_and_notes(a: Analyses) -> list[Item]:
    return [*(Reason(p) for p in a.study.problems), *(Text(f"Note: {n}") for n in a.notes)]


def _fixed(a: Analyses) -> pd.DataFrame:
    fixed = a.study.meta.get("fixed")
    rows = [(str(k), _json(v)) for k, v in fixed.items()] if isinstance(fixed, dict) else []
    return pd.DataFrame(rows, columns=["setting", "value"])


def _distinct(table: pd.DataFrame, column: str) -> str:
    """The distinct values of ``column``, sorted, as one line."""
    if column not in table.columns or table[column].dropna().empty:
        return MISSING
    return ", ".join(fmt(v) for v in sorted(table[column].dropna().unique()))


def _sum(table: pd.DataFrame, column: str) -> str:
    """The sum of ``column`` as text (a dash when it is missing or empty)."""
    if column not in table.columns:
        return MISSING
    return fmt(float(pd.to_numeric(table[column]).sum(min_count=1)))


def _json(value: Any) -> str:
    """A setting's value as JSON text."""
    return json.dumps(value, default=str, sort_keys=True)


SUMMARY = SectionSpec(
    "Study summary", (), None,
    (ItemsPart(_problems_and_notes),
     TablePart(summary_rows),
     TablePart(lambda a: a.value("status_counts"), caption="Trials by status",
               csv="status_counts"),
     TablePart(_fixed, caption="Fixed settings (shared by every trial)",
               when=lambda a: not _fixed(a).empty),
     TablePart(lambda a: a.value("errors"), rows=20, caption="Errors of failed trials "
               "(distinct messages, most frequent first; at most 20)",
               when=lambda a: not a.value("errors").empty)),
    (Csv("status_counts", "status_counts"),))


# ---------------------------------------------------------------------------------------------
# Best trial per batch size

BEST_COLUMNS = ("batch_size", "trial_id", "norm", "workers", "learning_rate", "warmup_epochs",
                "final_objective", "best_objective", "final_gap_accuracy", "steps_to_target",
                "final_gns_simple", "n_candidates", "reason")


def _best_intro(a: Analyses) -> str:
    return (f"For each batch size, the trial with the {better(a)} final_objective among trials "
            f"with status {ok(a)} (other hyperparameters tuned separately per batch size, as in "
            "Shallue et al. 2018). n_candidates: trials that competed.")


BEST = SectionSpec(
    "Best trial per batch size", ("best",), _best_intro,
    (TablePart(lambda a: a.value("best"), BEST_COLUMNS, csv="best_per_batch_size"),
     TablePart(lambda a: pivot_by_norm(a.value("best_norm"), "final_objective"),
               caption="final_objective of the best trial per normalization (rows) and batch "
               "size (columns)", csv="best_per_norm_and_batch_size", needs="best_norm"),
     FigurePart("best", lambda a: figures.best_figure(a.value("best_norm"), a.value("best"),
                                                      a.study.target),
                lambda _: "Final objective of the best trial per batch size, one line per "
                "normalization; the grey band joins the best over all normalizations.",
                has_values("best", "final_objective"),
                none_because("no batch size has a best trial", "best"), needs="best_norm")),
    (Csv("best_per_batch_size", "best"), Csv("best_per_norm_and_batch_size", "best_norm")))


# ---------------------------------------------------------------------------------------------
# Steps to target

FRONTIER_COLUMNS = ("batch_size", "trial_id", "steps", "steps_lower", "steps_upper",
                    "upper_rank", "examples", "examples_ratio", "step_decrease", "regime",
                    "n_trials", "n_reached", "reason")


def _steps_intro(a: Analyses) -> str:
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


def _frontier_shown(a: Analyses) -> pd.DataFrame:
    """The regimes, with the examples frontier beside them when it was computed."""
    shown, examples = a.value("regimes"), a.results["examples"]
    if examples.reason:
        return shown
    return shown.merge(examples.value[["batch_size", "examples", "examples_lower",
                                       "examples_upper"]], on="batch_size", how="left")


def _steps_drawable(a: Analyses) -> bool:
    return bool((a.value("steps")["steps"] > 0).any()) and not a.results["critical"].reason


def _steps_figure(a: Analyses) -> bytes:
    return figures.steps_figure(a.value("regimes"), a.value("examples"),
                                a.value("critical")["cbs"], a.study.target,
                                a.settings.zhang_excess)


def _steps_missing(a: Analyses) -> str:
    return (f"no batch size has a trial with status {ok(a)} that reached the target "
            f"{target_text(a)} with steps > 0: " + reasons_of(a.value("steps")))


STEPS = SectionSpec(
    "Steps to target against batch size", ("steps", "regimes"), _steps_intro,
    (ItemsPart(needs="examples"),
     FigurePart("steps_to_target", _steps_figure, lambda _: "Steps (left) and examples "
                "(right) to target of the best trial per batch size, coloured by regime.",
                _steps_drawable, _steps_missing),
     TablePart(_frontier_shown, FRONTIER_COLUMNS, csv="steps_to_target")),
    (Csv("steps_to_target", "steps"), Csv("regimes", "regimes"),
     Csv("examples_to_target", "examples")))


# ---------------------------------------------------------------------------------------------
# Critical batch size

CRITICAL_COLUMNS = ("method", "b_crit", "lower", "upper", "ratio_to_b_crit", "s_min", "e_min",
                    "how", "reason")


def critical_labels(s: AnalysisSettings) -> dict[str, str]:
    """What each method of ``CriticalBatchSize.estimates`` is called in the report."""
    return {"mccandlish_fit": "McCandlish et al. 2018 fit",
            "mccandlish_fit_cov": "McCandlish et al. 2018 fit, covariance interval",
            "zhang_20pct": f"Zhang et al. 2024 {s.zhang_excess:.0%} rule",
            "gns_simple": "gradient noise scale B_simple (measured)"}


def _critical_intro(a: Analyses) -> str:
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
    cbs = a.value("critical")["cbs"]
    boot = cbs.bootstrap
    if boot is None:
        return (f"The fit's {cbs.ci:.0%} interval comes from its covariance (the scatter of "
                "the frontier points about the curve).")
    return (f"The fit's {cbs.ci:.0%} interval: the trials of each batch size were resampled "
            f"with replacement {boot.n_boot} times (seed {boot.seed}), the fastest per batch "
            "size retaken and the curve refitted each time; it is the middle "
            f"{cbs.ci:.0%} of those refits (a refit running off the batch sizes measured "
            "counts as unbounded). The covariance row is the same fit's textbook interval, "
            "which takes every frontier point as equally noisy, judged from their scatter "
            "about the curve.")


def _critical_notes(a: Analyses) -> list[Item]:
    """The Zhang flag, and B_simple against B_crit, in words."""
    cbs = a.value("critical")["cbs"]
    items: list[Item] = []
    if cbs.zhang_b0_share > B0_DOMINATES:
        items.append(Text(f"Note: Zhang et al. 2024 rule: {cbs.zhang_reason}."))
    if pd.notna(cbs.gns) and pd.notna(cbs.b_crit_fit):
        items.append(Text(f"B_simple / B_crit = {cbs.gns / cbs.b_crit_fit:.3g} (B_simple "
                          f"{cbs.gns:.4g}, B_crit {cbs.b_crit_fit:.4g}); McCandlish et al. "
                          "(2018) predict B_crit close to the noise scale, which B_simple "
                          "approximates."))
    return items


def _critical_shown(a: Analyses) -> pd.DataFrame:
    table = a.value("critical")["table"]
    labels = table["method"].map(critical_labels(a.settings)).fillna(table["method"])
    return table.assign(method=labels)


BY_TARGET_CAPTION = (
    "The McCandlish B_crit at each of the study's targets: the history measured again at each "
    "threshold (the crossing interpolated), the frontier retaken and the curve refitted, with "
    "the trial-bootstrap interval of the table above. McCandlish et al. (2018) and Zhang et "
    "al. (2024) find it grows as the target gets harder.")


CRITICAL = SectionSpec(
    "Critical batch size", ("critical",), _critical_intro,
    (TablePart(_critical_shown, CRITICAL_COLUMNS, csv="critical_batch_size"),
     ItemsPart(_critical_notes),
     TablePart(lambda a: a.value("critical_by_target"), caption=BY_TARGET_CAPTION,
               csv="critical_by_target", needs="critical_by_target",
               when=lambda a: len(a.value("critical_by_target")) > 0),
     TablePart(lambda a: a.value("gns"), caption="The noise scale of the best trial per batch "
               "size: gns_at_target (the evaluation-time probe averaged up to the target), "
               "final_gns_probe (at the last evaluation) and final_gns_simple (the DDP / "
               "accumulation estimator, where measured)", csv="gns",
               when=lambda a: len(a.value("gns")) > 0, needs="gns"),
     FigurePart("gns", lambda a: figures.gns_figure(a.value("gns_curves")["rows"]),
                lambda a: a.value("gns_curves")["caption"], needs="gns_curves")),
    (Csv("critical_batch_size", "critical", lambda v: v["table"]),
     Csv("critical_by_target", "critical_by_target", when=lambda v: len(v) > 0),
     Csv("critical_batch_size_points", "critical", lambda v: v["cbs"].points),
     Csv("gns", "gns", when=lambda v: len(v) > 0)))


# ---------------------------------------------------------------------------------------------
# Learning rate and warmup

LR_COLUMNS = ("parameter", "method", "exponent", "exponent_lower", "exponent_upper",
              "coefficient", "r_squared", "n_points", "n_trials", "linear_rule_in_ci",
              "sqrt_rule_in_ci", "constant_in_ci", "reason")
LR_POINT_COLUMNS = ("batch_size", "n_trials", "lr_min", "lr_max", "learning_rate", "lr_opt",
                    "lr_opt_lower", "lr_opt_upper", "method", "edge", "reason")
RULE_NAMES = {"linear_rule_in_ci": "the linear rule", "sqrt_rule_in_ci": "the square-root rule",
              "constant_in_ci": "a constant"}


def _lr_intro(a: Analyses) -> str:
    linear, sqrt, constant = (RULES[k] for k in ("linear_rule_in_ci", "sqrt_rule_in_ci",
                                                  "constant_in_ci"))
    return ("The tuned learning rate lr_opt of each batch size is the peak of a parabola in "
            f"log(lr) fitted to its trials (those within {WINDOW:g} decades of its best), and "
            "the exponent k of lr_opt ~ B^k comes from one such parabola fitted to every batch "
            "size at once (a shared curvature, the peak moving as k log B), with a "
            f"{a.settings.ci:.0%} interval from {a.settings.n_boot} resamples of the trials "
            "within each batch size; warmup is a power law through the best trial's "
            f"warmup_epochs. Rules: linear k = {linear:g} (Goyal et al. 2017), square-root "
            f"k = {sqrt:g} (Hoffer et al. 2017); for warmup, constant in epochs (k = "
            f"{constant:g}, Goyal et al.).")


def _lr_result(fit: pd.Series, ci: float) -> str:
    """One fit in words: k, how it was found, its interval and the rules inside it."""
    how = (f"one parabola over {fit['n_trials']} trials at {fit['n_points']} batch sizes"
           if fit["method"] == JOINT else
           f"a power law through the best trial of {fit['n_points']} batch sizes")
    text = f"{fit['parameter']}: k = {fit['exponent']:.2f} from {how}"
    if pd.isna(fit["exponent_lower"]):
        return text + ", no interval."
    known = {name: bool(fit[column]) for column, name in RULE_NAMES.items()
             if pd.notna(fit[column])}
    inside = [name for name, within in known.items() if within]
    outside = [name for name, within in known.items() if not within]
    contains = "contains " + " and ".join(inside) if inside else "contains none of the rules"
    return (f"{text}, {ci:.0%} interval [{fit['exponent_lower']:.2f}, "
            f"{fit['exponent_upper']:.2f}]: it {contains}"
            + (f", not {' or '.join(outside)}." if inside and outside else "."))


def _lr_words(a: Analyses) -> list[Item]:
    """Each fit's result, then its reason: a Reason where it failed, else a note."""
    fits = a.value("lr").fits
    items: list[Item] = [Text(_lr_result(fit, a.settings.ci)) for _, fit in fits.iterrows()
                         if pd.notna(fit["exponent"])]
    return items + [Reason(f"{fit.parameter}: {fit.reason}") if pd.isna(fit.exponent)
                    else Text(f"Note: {fit.parameter}: {fit.reason}")
                    for fit in fits[fits["reason"].notna()].itertuples()]


def _lr_missing(a: Analyses) -> str | None:
    if a.value("lr").fits["reason"].notna().any():
        return None  # the fits' reasons already say why
    return "no batch size has a trial with a learning_rate > 0 and an objective"


def _lr_points(a: Analyses) -> bool:
    return len(a.value("lr").points) > 0


def _lr_norm_fits(a: Analyses) -> pd.DataFrame:
    fits = a.value("lr_by_norm").fits
    return fits[fits["parameter"] == "learning_rate"]


LR = SectionSpec(
    "Learning rate and warmup against batch size", ("lr",), _lr_intro,
    (TablePart(lambda a: a.value("lr").fits, LR_COLUMNS, csv="lr_scaling"),
     ItemsPart(_lr_words),
     TablePart(lambda a: a.value("lr").points, LR_POINT_COLUMNS,
               caption="Per batch size: lr_opt, the vertex of the parabola in log(lr), with "
               "Fieller's interval; learning_rate is the best trial's, lr_min and lr_max the "
               "range tried. edge: no peak inside the lrs tried, so lr_opt is the best trial's "
               "lr (a bound on the optimum).", csv="lr_scaling_points", when=_lr_points),
     TablePart(lambda a: _lr_norm_fits(a), ("norm", *LR_COLUMNS),
               caption="The learning-rate exponent of each normalization on its own (its own "
               "trials, the same joint fit and bootstrap).", csv="lr_scaling_by_norm",
               needs="lr_by_norm", when=lambda a: a.value("lr_by_norm") is not None),
     FigurePart("lr_scaling", lambda a: figures.lr_figure(a.value("lr"), "learning_rate",
                                                          "warmup_epochs"),
                lambda _: "lr_opt per batch size (the vertex of its parabola, with its "
                "interval; hollow: edge, the best trial's lr), the best trial's lr (x), the "
                "joint fit and the reference rules through the smallest batch size; warmup: "
                "the best trial's.", _lr_points, _lr_missing)),
    (Csv("lr_scaling", "lr", lambda v: v.fits),
     Csv("lr_scaling_points", "lr", lambda v: v.points),
     Csv("lr_scaling_by_norm", "lr_by_norm", lambda v: v.fits, when=lambda v: v is not None),
     Csv("lr_scaling_points_by_norm", "lr_by_norm", lambda v: v.points,
         when=lambda v: v is not None)))


# ---------------------------------------------------------------------------------------------
# Generalization gap


def _gap_intro(a: Analyses) -> str:
    return ("The generalization gap (Keskar et al. 2017; Hoffer et al. 2017): train - "
            "validation accuracy and validation - train loss. gap_*_at_target is taken where "
            "the trial crossed the target (interpolated like the steps), so every trial is "
            "compared at the same validation quality; final_gap_* at its last evaluation. "
            f"Each table gives the median over the {ok(a)} trials of a normalization and "
            "batch size (n_trials in gap_by_norm.csv): the primary measure, since the best "
            "trial by validation is chosen on the same validation set, which biases its gap "
            "low (gap_of_best in the CSV)." + _budget_words(a))


def _budget_words(a: Analyses) -> str:
    if a.value("gap_by_budget") is None:
        return ""
    return (" The study ran several budgets (rows by norm and budget). Hoffer et al. (2017) "
            "found that much of the large-batch generalization gap on an epochs budget (their "
            "gap: the drop in validation accuracy from small to large batches) comes from the "
            "updates a large batch does not take, and closes when the updates are matched (a "
            "steps budget). The first comparison table gives the best trial's validation "
            "objective per budget and batch size; the others, per budget, the median train - "
            "validation gap at the largest batch size minus that at the smallest.")


def _budget_comparison(a: Analyses) -> list[Item]:
    """excess_gap with a column per budget; one table per gap measure."""
    frame, best = a.value("gap_by_budget"), a.value("best_by_budget")
    items: list[Item] = []
    if frame is None or best is None:  # the study ran one budget
        return items
    items.append(Table(display(pivot_by_norm(best, "final_objective", ["budget"])),
                       "final_objective of the best trial per norm, budget and batch size: "
                       "Hoffer et al.'s large-batch degradation is the drop along a row", None))
    for column, part in frame.groupby("gap", sort=False):
        shown = part.assign(batch_sizes=part["smallest_batch_size"].map(fmt) + " -> "
                            + part["largest_batch_size"].map(fmt))
        items.append(Table(display(shown, ["norm", "budget", "batch_sizes", "gap_at_smallest",
                                           "gap_at_largest", "excess_gap"]),
                           f"{column}: the median gap at the largest batch size with a value "
                           "minus that at the smallest, by budget", "gap_by_budget"))
    return items


def _gap_columns(a: Analyses) -> list[str]:
    """The gaps measured: final_gap_accuracy, final_gap_loss, or both."""
    return [c for c in GAP_COLUMNS if a.value("gap")["gap"].eq(c).any()]


def _gap_tables(a: Analyses) -> list[Item]:
    """One table per gap: norms as rows, batch sizes as columns."""
    gap = a.value("gap")
    within = ["budget"] if "budget" in gap.columns else []
    return [Table(display(pivot_by_norm(gap[gap["gap"] == column], "gap_median", within)),
                  f"{column}, median over trials", "gap_by_norm") for column in _gap_columns(a)]


DIFFUSION_CAPTION = (
    "Distance from initialisation (Hoffer et al. 2017): ||w - w_0|| = a + b ln(step) fitted to "
    "each trial's evaluations (step >= 1); per batch size the median, smallest and largest "
    "slope b, the median R^2 and the median final distance. Their random-walk model predicts "
    "a line in log steps, and a larger batch ending nearer its start on an epoch budget.")


GAP = SectionSpec(
    "Generalization gap against batch size, by normalization", ("gap",), _gap_intro,
    (ItemsPart(_gap_tables),
     FigurePart("gap_by_norm", lambda a: figures.gap_figure(a.value("gap"), _gap_columns(a)),
                lambda _: "Generalization gap against batch size, the median over trials, "
                "one line per normalization (and budget, when the study ran several).",
                has_values("gap", "gap_median"),
                none_because("no trial has a gap value", "gap", "norm")),
     ItemsPart(_budget_comparison),
     TablePart(lambda a: a.value("diffusion"), caption=DIFFUSION_CAPTION, csv="diffusion",
               needs="diffusion", when=lambda a: len(a.value("diffusion")) > 0)),
    (Csv("gap_by_norm", "gap"), Csv("gap_by_budget", "gap_by_budget"),
     Csv("diffusion", "diffusion", when=lambda v: len(v) > 0)))


# ---------------------------------------------------------------------------------------------
# Throughput

THROUGHPUT_COLUMNS = ("batch_size", "workers", "trial_id", "throughput", "n_trials",
                      "speedup_vs_smallest_batch", "efficiency_workers", "reason")


def _throughput_intro(a: Analyses) -> str:
    return ("throughput: training examples per second (evaluation excluded) of the fastest "
            f"trial with status {statuses_words(a.settings.throughput_statuses)} per (batch "
            "size, workers). speedup_vs_smallest_batch: throughput over that at the smallest "
            "batch size on the same workers. efficiency_workers: throughput(B, w) / (w x "
            "throughput(B, 1)), 1 = perfect scaling over workers at a fixed global batch (as "
            "in Goyal et al. 2017).")


THROUGHPUT = SectionSpec(
    "Throughput against batch size and workers", ("throughput",), _throughput_intro,
    (TablePart(lambda a: a.value("throughput"), THROUGHPUT_COLUMNS, csv="throughput"),
     FigurePart("throughput", lambda a: figures.throughput_figure(a.value("throughput")),
                lambda _: "Throughput, batch scaling and (when measured) worker scaling "
                "efficiency against batch size.", has_values("throughput", "throughput"),
                none_because("no throughput measured", "throughput"))),
    (Csv("throughput", "throughput"),))


# ---------------------------------------------------------------------------------------------
# Pareto front

PARETO_COLUMNS = ("trial_id", "batch_size", "norm", "workers", "learning_rate",
                  "final_objective", "seconds_to_target", "steps_to_target")


def _competing(a: Analyses) -> int:
    """Trials that competed for the Pareto front."""
    return int(a.value("pareto")["reason"].isna().sum())


def _on_front(a: Analyses) -> pd.DataFrame:
    front = a.value("pareto")
    return front[front["on_front"]]


def _pareto_intro(a: Analyses) -> str:
    return (f"Trials with status {ok(a)} that reached the target {target_text(a)}: "
            f"{_competing(a)} competed, {len(_on_front(a))} on the front ({better(a)} "
            "final_objective, lowest seconds_to_target = training seconds to the first "
            "evaluation reaching the target).")


def _pareto_missing(a: Analyses) -> str:
    kinds = a.value("pareto")["reason"].value_counts()
    return "no trial competed: " + "; ".join(f"{n} trials: {r}" for r, n in kinds.items())


PARETO = SectionSpec(
    "Pareto front: final objective and time to target", ("pareto",), _pareto_intro,
    (FigurePart("pareto", lambda a: figures.pareto_figure(a.value("pareto"), "seconds_to_target",
                                                          "final_objective"),
                lambda _: "Every competing trial; the Pareto front in orange.",
                lambda a: _competing(a) > 0, _pareto_missing),
     TablePart(_on_front, PARETO_COLUMNS, "Trials on the front", "pareto",
               when=lambda a: _competing(a) > 0)),
    (Csv("pareto", "pareto"),))


# the adaptive study's section is declared in its own module, from the classes above
from lbt_study.report.adaptive_section import ADAPTIVE  # noqa: E402
from lbt_study.report.branched_section import BRANCHED  # noqa: E402

SECTIONS = (SUMMARY, BEST, STEPS, CRITICAL, LR, GAP, THROUGHPUT, PARETO, ADAPTIVE,
            BRANCHED)
FIGURES = tuple(p.name for spec in SECTIONS for p in spec.parts if isinstance(p, FigurePart))
TABLES = tuple(c.name for spec in SECTIONS for c in spec.csv)
