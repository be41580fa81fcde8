"""The study report: every analysis of a run directory, as HTML, Markdown, PNG and CSV.

``write_report(run_dir)`` reads the result tables (``load_results``) and ``study.json``,
runs the pure analysis functions of ``lbt_study.analysis`` (``analyze``), turns their
output into sections of text, tables and figures (``build_sections``; the figures only draw
what the analyses returned, see ``lbt_study.figures``), and writes them into the report
directory: ``report.html`` (self-contained: figures embedded as base64 PNG, inline CSS, no
scripts), ``report.md`` (the same content; figures as PNG files beside it) and one CSV per
analysis table. An analysis that cannot be computed (no target, too few batch sizes, no
trial reached the target, no noise-scale measurements, ...) shows its reason where its
figure would be; no number is made up and no exception escapes for a finished, partial or
failed study. Every string that came from the user (study name, workload, norms, error
messages, fixed settings, table cells) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from lbt_study import figures
from lbt_study.analysis import best_per_batch_size as _best_per_batch_size
from lbt_study.analysis import (
    classify_regimes,
    critical_batch_size,
    gap_by_norm,
    lr_scaling,
    pareto_front,
    steps_to_target_frontier,
    throughput_frontier,
    time_to_target,
)
from lbt_study.analysis.targets import DIRECTIONS
from lbt_study.errors import UserError
from lbt_study.results import STATUSES, load_results

TOP_K, N_BOOT, CI, SEED = 3, 1000, 0.95, 0
GNS_POINTS_PER_TRIAL = 200  # the noise-scale figure draws at most this many points a trial
GAP_COLUMNS = ("final_gap_accuracy", "final_gap_loss")
PARETO = (("final_objective", None), ("seconds_to_target", "minimize"))
FIGURES = ("best", "steps_to_target", "gns", "lr_scaling", "gap_by_norm", "throughput",
           "pareto")
TABLES = ("best_per_batch_size", "best_per_norm_and_batch_size", "steps_to_target",
          "examples_to_target", "regimes", "critical_batch_size", "critical_batch_size_points",
          "gns", "lr_scaling", "gap_by_norm", "throughput", "pareto", "status_counts")
MISSING = "—"


@dataclass(frozen=True)
class ReportPaths:
    """Where ``write_report`` put things: the two documents, and each figure and table."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: dict[str, Path]
    tables: dict[str, Path]


@dataclass(frozen=True)
class StudyInfo:
    """What study.json says, and what it could not say (``problems``)."""

    meta: dict[str, Any]
    direction: str | None
    target: float | None
    problems: tuple[str, ...] = ()
    results_written: str | None = None  # when the trials table was last written


@dataclass(frozen=True)
class Outcome:
    """An analysis result, or the reason there is none (exactly one is set)."""

    value: Any = None
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class Analyses:
    """Every analysis of one study, computed before anything is drawn."""

    study: StudyInfo
    trials: pd.DataFrame
    history: pd.DataFrame
    notes: tuple[str, ...]
    results: dict[str, Outcome]


# ---------------------------------------------------------------------------------------------
# Reading


def read_study(run_dir: Path) -> StudyInfo:
    """study.json of ``run_dir``: direction and target checked, nothing guessed when absent."""
    path = run_dir / "study.json"
    if not path.is_file():
        return StudyInfo({}, None, None, (f"{path.name} is missing: the study's name, objective "
                                          "direction and target are unknown (nothing is guessed)",))
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return StudyInfo({}, None, None, (f"{path.name} could not be read: {exc}",))
    if not isinstance(meta, dict):
        return StudyInfo({}, None, None, (f"{path.name} does not hold a JSON object",))
    problems = []
    direction = meta.get("objective_direction")
    if direction not in DIRECTIONS:
        problems.append(f"objective_direction is {direction!r}, not one of {DIRECTIONS}: "
                        "analyses that rank trials are left out")
        direction = None
    target = meta.get("target")
    if target is not None and not _is_number(target):
        problems.append(f"target is {target!r}, not a number: no steps to target")
        target = None
    return StudyInfo(meta, direction, None if target is None else float(target), tuple(problems))


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(trials, history, notes); a run directory with study.json but no tables yet is empty."""
    try:
        trials, history = load_results(run_dir)
    except UserError as exc:
        if not (run_dir / "study.json").is_file():
            raise
        return pd.DataFrame(), pd.DataFrame(), [f"no result tables yet: {exc}"]
    return trials, history, []


def add_targets_from_history(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
                             notes: list[str]) -> pd.DataFrame:
    """Older run directories lack the at-target columns: measure them with ``time_to_target``."""
    if "steps_to_target" in trials.columns or trials.empty or study.target is None:
        return trials
    if study.direction is None or not {"trial_id", "step", "examples_seen",
                                       "objective"} <= set(history.columns):
        return trials
    found = time_to_target(history, study.target, study.direction)
    found = found.drop(columns=["epoch_to_target", "value_at_target"])
    found = found.rename(columns={"reached": "reached_target"})
    out = trials.drop(columns=[c for c in found.columns if c != "trial_id" and c in trials])
    out = out.merge(found, on="trial_id", how="left")
    out["reached_target"] = out["reached_target"].fillna(False).astype(bool)
    notes.append("the trials table has no steps_to_target column (an older lbt-study wrote "
                 "it): steps, examples and seconds to target were measured from the history "
                 "with time_to_target, at the first evaluation reaching the target")
    return out


# ---------------------------------------------------------------------------------------------
# Analysis (pure: tables in, DataFrames and dataclasses out)


def attempt(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """``fn(*args, **kwargs)`` as an Outcome; an analysis' ValueError becomes its reason."""
    try:
        return Outcome(fn(*args, **kwargs))
    except (ValueError, KeyError) as exc:
        text = str(exc)
        return Outcome(reason=f"{what} could not be computed: "
                              f"{text if len(text) < 400 else text[:400] + ' ...'}")


def missing_columns(table: pd.DataFrame, columns: tuple[str, ...], name: str) -> str | None:
    """A reason naming the columns ``table`` lacks (None when it has them all)."""
    lacking = [c for c in columns if c not in table.columns]
    if not lacking:
        return None
    return f"the {name} table has no {', '.join(lacking)} column" + ("s" if len(lacking) > 1
                                                                     else "")


def _guard(trials: pd.DataFrame, study: StudyInfo, columns: tuple[str, ...],
           needs_target: bool = False) -> str | None:
    """Why an analysis cannot start (no rows, no direction, no target, a missing column)."""
    if trials.empty:
        return "the trials table has no rows: no trial has finished"
    if study.direction is None:
        return ("the objective's direction is unknown (see the study summary); lbt-study "
                "never guesses it from a name")
    if needs_target and study.target is None:
        return "the study has no target, so steps, examples and seconds to target are not measured"
    return missing_columns(trials, columns, "trials")


def analyze(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
            notes: tuple[str, ...] = ()) -> Analyses:
    """Run every analysis; each result is an ``Outcome`` (a value, or why there is none)."""
    d = study.direction
    results: dict[str, Outcome] = {}
    results["best"] = _run(trials, study, ("batch_size", "final_objective"), "best trial",
                           _best_per_batch_size, trials, d)
    results["best_norm"] = _run(trials, study, ("batch_size", "norm", "final_objective"),
                                "best trial per norm", _best_per_batch_size, trials, d,
                                by=("norm", "batch_size"))
    frontier_cols = ("batch_size", "trial_id", "reached_target", "final_objective")
    for key, metric in (("steps", "steps_to_target"), ("examples", "examples_to_target")):
        results[key] = _run(trials, study, (*frontier_cols, metric), f"the {metric} frontier",
                            steps_to_target_frontier, trials, d, metric=metric, top_k=TOP_K,
                            n_boot=N_BOOT, seed=SEED, ci=CI, needs_target=True)
    results["regimes"] = _then(results["steps"], "regimes", classify_regimes)
    results["gns"] = gns_of_best(results["best"])
    results["critical"] = _critical(results["steps"], results["gns"])
    results["gns_curves"] = gns_curves(results["best"], history, trials, d)
    results["lr"] = _run(trials, study, ("batch_size", "learning_rate", "final_objective"),
                         "lr scaling", lr_scaling, trials, d, ci=CI)
    results["gap"] = _gaps(trials, study)
    results["throughput"] = _throughput(trials)
    objectives = [(column, direction or d) for column, direction in PARETO]
    results["pareto"] = _run(trials, study, ("final_objective", "seconds_to_target"),
                             "the Pareto front", pareto_front, trials, objectives,
                             needs_target=True)
    return Analyses(study, trials, history, tuple(notes), results)


def _run(trials: pd.DataFrame, study: StudyInfo, columns: tuple[str, ...], what: str,
         fn: Callable[..., Any], *args: Any, needs_target: bool = False, **kwargs: Any) -> Outcome:
    """``fn(*args, **kwargs)`` unless ``_guard`` gives a reason not to start."""
    reason = _guard(trials, study, columns, needs_target)
    return Outcome(reason=reason) if reason else attempt(what, fn, *args, **kwargs)


def _then(previous: Outcome, what: str, fn: Callable[..., Any]) -> Outcome:
    """``fn`` of the previous result, or the previous reason."""
    return previous if previous.reason else attempt(what, fn, previous.value)


def gns_of_best(best: Outcome) -> Outcome:
    """final_gns_simple of the best trial (by final objective) at each batch size."""
    if best.reason:
        return best
    frame = best.value
    reason = missing_columns(frame, ("final_gns_simple",), "trials")
    if reason:
        return Outcome(reason=reason)
    rows = frame[frame["n_candidates"] > 0][["batch_size", "trial_id", "final_gns_simple"]]
    return Outcome(rows.reset_index(drop=True))


def _median_gns(gns: Outcome) -> tuple[float | None, str]:
    """The median final_gns_simple over the best trials, and the words for it."""
    if gns.reason:
        return None, gns.reason
    values = pd.to_numeric(gns.value["final_gns_simple"]).dropna()
    if values.empty:
        return None, ("no best trial has a final_gns_simple value (it is measured only with "
                      "more than one worker or with accumulation steps)")
    return float(values.median()), (f"median final_gns_simple of the best trial at "
                                    f"{len(values)} of {len(gns.value)} batch sizes")


def _critical(steps: Outcome, gns: Outcome) -> Outcome:
    """``critical_batch_size`` of the steps frontier (and the measured noise scale)."""
    median, gns_words = _median_gns(gns)
    frontier = steps.value if not steps.reason else pd.DataFrame(
        {"batch_size": pd.Series(dtype=float), "steps": pd.Series(dtype=float)})
    result = attempt("the critical batch size", critical_batch_size, frontier, gns=median, ci=CI)
    if result.reason:
        return result
    table = result.value.estimates()
    table["reason"] = table["reason"].astype(object)
    if steps.reason:
        table.loc[table["method"] != "gns_simple", "reason"] = steps.reason
    table.loc[table["method"] == "gns_simple", "reason"] = gns_words if median is None else None
    table["how"] = [f"S(B) = S_min (1 + B_crit/B) fitted to the steps frontier "
                    f"({CI:.0%} interval)", "steps 20% above perfect scaling from the smallest B",
                    gns_words if median is not None else "no measurement"]
    table["s_min"] = [result.value.s_min, math.nan, math.nan]
    table["e_min"] = [result.value.e_min, math.nan, math.nan]
    table = table[["method", "b_crit", "lower", "upper", "s_min", "e_min", "how", "reason"]]
    return Outcome({"cbs": result.value, "table": table})


def gns_curves(best: Outcome, history: pd.DataFrame, trials: pd.DataFrame,
               direction: str | None) -> Outcome:
    """History rows (examples_seen, gns_simple) to draw, thinned, with the words for them.

    The best trial per B; when none of them measured the noise scale, the best per B among
    the trials that did (the caption says which). Value: {"rows": DataFrame, "caption": str}.
    """
    if best.reason:
        return best
    reason = missing_columns(history, ("trial_id", "examples_seen", "gns_simple"), "history")
    if reason:
        return Outcome(reason=reason)
    rows = _gns_rows(best.value, history)
    caption = ("Gradient noise scale B_simple over training, for the best trial (by "
               "final_objective) at each batch size that measured it.")
    if rows.empty:
        measured = history.loc[pd.to_numeric(history["gns_simple"]).notna(), "trial_id"]
        subset = trials[trials["trial_id"].isin(measured)]
        fallback = attempt("best measuring trial", _best_per_batch_size, subset, direction)
        rows = pd.DataFrame() if fallback.reason or subset.empty else _gns_rows(
            fallback.value, history)
        caption = ("None of the best trials measured the noise scale: B_simple over training "
                   "for the best trial at each batch size among those that measured it "
                   "(more than one worker, or accumulation steps).")
    if rows.empty:
        return Outcome(reason="the history has no gns_simple values (the noise scale needs "
                              "more than one worker or accumulation steps)")
    position = rows.groupby("trial_id").cumcount()
    every = (rows.groupby("trial_id")["trial_id"].transform("size") // GNS_POINTS_PER_TRIAL) + 1
    return Outcome({"rows": rows[position % every == 0].reset_index(drop=True),
                    "caption": caption})


def _gns_rows(best: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The history's finite gns_simple rows of the trials in ``best``, by B and examples."""
    chosen = best[best["n_candidates"] > 0][["trial_id", "batch_size"]]
    rows = history[["trial_id", "examples_seen", "gns_simple"]].merge(chosen, on="trial_id")
    rows = rows.assign(gns_simple=pd.to_numeric(rows["gns_simple"]))
    return rows[rows["gns_simple"].notna()].sort_values(["batch_size", "examples_seen"],
                                                        kind="stable")


def _gaps(trials: pd.DataFrame, study: StudyInfo) -> Outcome:
    """``gap_by_norm`` for the accuracy and the loss gap, stacked with a ``gap`` column."""
    present = [c for c in GAP_COLUMNS if c in trials.columns]
    reason = _guard(trials, study, ("batch_size", "norm", "trial_id", "final_objective"))
    if reason or not present:
        return Outcome(reason=reason or missing_columns(trials, GAP_COLUMNS, "trials"))
    parts = []
    for column in present:
        got = attempt("the gap by norm", gap_by_norm, trials, study.direction, gap_col=column)
        if got.reason:
            return got
        parts.append(got.value.assign(gap=column))
    return Outcome(pd.concat(parts, ignore_index=True))


def _throughput(trials: pd.DataFrame) -> Outcome:
    """``throughput_frontier``; it needs no direction."""
    if trials.empty:
        return Outcome(reason="the trials table has no rows: no trial has finished")
    reason = missing_columns(trials, ("batch_size", "workers", "throughput", "trial_id"), "trials")
    return Outcome(reason=reason) if reason else attempt("throughput", throughput_frontier, trials)


# ---------------------------------------------------------------------------------------------
# Sections: text, tables and figures (figures drawn from the analyses' output only)


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str


@dataclass(frozen=True)
class Reason:
    """Why an analysis or figure is missing, shown in its place."""

    text: str


@dataclass(frozen=True, eq=False)
class Table:
    """A table shown in the report (cells already text)."""

    frame: pd.DataFrame  # already formatted for display
    caption: str = ""
    csv: str | None = None  # the CSV holding the full table


@dataclass(frozen=True)
class Figure:
    """A drawn figure: file stem, PNG bytes, caption."""

    name: str
    png: bytes
    caption: str


@dataclass
class Section:
    """A titled part of the report: its items in order."""

    title: str
    items: list[Text | Reason | Table | Figure] = field(default_factory=list)


def fmt(value: Any) -> str:
    """One table cell as text: missing as a dash, floats to 4 significant digits."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) or hasattr(value, "dtype") and value.dtype.kind == "f":
        value = float(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:.0f}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if hasattr(value, "dtype") and value.dtype.kind == "b":
        return "yes" if value else "no"
    return str(value)


def display(frame: pd.DataFrame, columns: list[str] | None = None,
            rows: int | None = None) -> pd.DataFrame:
    """``frame`` restricted to ``columns`` that exist, every cell formatted as text."""
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    if rows is not None:
        frame = frame.head(rows)
    return pd.DataFrame({c: [fmt(v) for v in frame[c]] for c in frame.columns},
                        columns=list(frame.columns), dtype=object)


def reasons_of(frame: pd.DataFrame, key: str = "batch_size", column: str = "reason") -> str:
    """The distinct row reasons of ``frame``, each with the keys it applies to."""
    if column not in frame.columns:
        return ""
    parts = []
    for reason, rows in frame[frame[column].notna()].groupby(column, sort=False):
        keys = ", ".join(dict.fromkeys(fmt(k) for k in rows[key])) if key in rows else ""
        parts.append(f"{key} {keys}: {reason}" if keys else str(reason))
    return "; ".join(parts)


def target_text(study: StudyInfo) -> str:
    """The target as text ("none" when the study has none)."""
    return "none" if study.target is None else f"{study.target:g}"


def summary_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """What was asked and what came back: name, objective, target, trials by status, ..."""
    meta, t = a.study.meta, a.trials
    section = Section("Study summary")
    section.items += [Reason(p) for p in a.study.problems]
    section.items += [Text(f"Note: {n}") for n in a.notes]
    counts = status_counts(t)
    by_status = ", ".join(f"{s} {n}" for s, n in zip(counts["status"], counts["trials"],
                                                      strict=True) if n) or "none"
    objective = meta.get("objective")
    rows = [
        ("study name", meta.get("name", "unknown")),
        ("workload", meta.get("workload", "unknown")),
        ("objective", "final_objective: the workload's objective on the validation set"
                      + (f" ({objective})" if objective else "")),
        ("direction", a.study.direction or "unknown"),
        ("target", target_text(a.study)),
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
    section.items.append(Table(display(pd.DataFrame(rows, columns=["field", "value"]))))
    section.items.append(Table(display(counts), "Trials by status", "status_counts"))
    fixed = meta.get("fixed")
    if isinstance(fixed, dict) and fixed:
        frame = pd.DataFrame([(str(k), _json(v)) for k, v in fixed.items()],
                             columns=["setting", "value"])
        section.items.append(Table(display(frame), "Fixed settings (shared by every trial)"))
    errors = error_counts(t)
    if not errors.empty:
        section.items.append(Table(display(errors, rows=20), "Errors of failed trials "
                                   "(distinct messages, most frequent first; at most 20)"))
    return section, {"status_counts": counts}


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per status: every known status (zero included), then any other seen."""
    seen = (trials["status"].astype(str).value_counts() if "status" in trials
            else pd.Series(dtype=int))
    names = [*STATUSES, *sorted(set(seen.index) - set(STATUSES))]
    return pd.DataFrame({"status": names, "trials": [int(seen.get(s, 0)) for s in names]})


def error_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Distinct error messages with their count, statuses and batch sizes."""
    if "error" not in trials.columns or trials.empty:
        return pd.DataFrame()
    errors = trials[trials["error"].notna() & (trials["error"].astype(str) != "")]
    if errors.empty:
        return pd.DataFrame()
    keys = {c: c for c in ("status", "batch_size") if c in errors.columns}
    grouped = errors.groupby(errors["error"].astype(str), sort=False)
    out = grouped.size().rename("trials").reset_index()
    for column in keys:
        out[column] = grouped[column].agg(lambda s: ", ".join(sorted(map(str, s.unique()))))\
            .to_numpy()
    return out.sort_values("trials", ascending=False, kind="stable").reset_index(drop=True)


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


BEST_COLUMNS = ["batch_size", "trial_id", "norm", "workers", "learning_rate", "warmup_epochs",
                "final_objective", "best_objective", "final_gap_accuracy", "steps_to_target",
                "final_gns_simple", "n_candidates", "reason"]


def best_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """The best trial per batch size (Shallue et al.'s per-B tuning) and per norm."""
    section = Section("Best trial per batch size")
    best, by_norm = a.results["best"], a.results["best_norm"]
    if best.reason:
        section.items.append(Reason(best.reason))
        return section, {}
    section.items.append(Text(
        f"For each batch size, the trial with the {_better(a)} final_objective among trials "
        "with status ok (other hyperparameters tuned separately per batch size, as in "
        "Shallue et al. 2018). n_candidates: trials that competed."))
    section.items.append(Table(display(best.value, BEST_COLUMNS), "", "best_per_batch_size"))
    tables = {"best_per_batch_size": best.value}
    if by_norm.reason:
        section.items.append(Reason(by_norm.reason))
        return section, tables
    tables["best_per_norm_and_batch_size"] = by_norm.value
    pivot = by_norm.value.pivot(index="norm", columns="batch_size", values="final_objective")
    pivot.columns = [f"B={fmt(c)}" for c in pivot.columns]
    section.items.append(Table(display(pivot.reset_index()), "final_objective of the best trial "
                               "per normalization (rows) and batch size (columns)",
                               "best_per_norm_and_batch_size"))
    if best.value["final_objective"].notna().any():
        png = figures.best_figure(by_norm.value, best.value, a.study.target)
        section.items.append(Figure("best", png, "Final objective of the best trial per batch "
                                    "size, one line per normalization; the grey band joins the "
                                    "best over all normalizations."))
    else:
        section.items.append(Reason("no batch size has a best trial: "
                                    + reasons_of(best.value)))
    return section, tables


def _better(a: Analyses) -> str:
    """"highest" or "lowest": the better end of the objective."""
    return "highest" if a.study.direction == "maximize" else "lowest"


FRONTIER_COLUMNS = ["batch_size", "trial_id", "steps", "steps_lower", "steps_upper", "examples",
                    "examples_ratio", "step_decrease", "regime", "n_trials", "n_reached",
                    "reason"]


def steps_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """Steps and examples to target against B, with regimes, perfect scaling and the fit."""
    section = Section("Steps to target against batch size")
    steps, examples, regimes = (a.results[k] for k in ("steps", "examples", "regimes"))
    if steps.reason or regimes.reason:
        section.items.append(Reason(steps.reason or regimes.reason))
        return section, {}
    tables = {"steps_to_target": steps.value, "regimes": regimes.value}
    section.items.append(Text(
        f"Shallue et al. (2018): for each batch size, the fewest steps any trial with status "
        f"ok needed to first reach the target {target_text(a.study)} (resolution: the "
        f"evaluation interval). Error bars: {CI:.0%} percentile-bootstrap interval of that "
        f"minimum over the {TOP_K} fastest reaching trials ({N_BOOT} resamples, seed {SEED}). "
        "Lines: perfect scaling through the smallest batch size (steps x B constant), 20% "
        "above it (Zhang et al. 2024), and the McCandlish et al. (2018) fit "
        "S(B) = S_min (1 + B_crit/B), E(B) = E_min (1 + B/B_crit). Regimes: perfect scaling "
        "while examples stay within 20% of the smallest batch size's (examples_ratio <= 1.2), "
        "maximal data parallelism once steps fall by less than 10% from the previous batch "
        "size (step_decrease < 0.1), diminishing returns in between."))
    shown = regimes.value
    if examples.reason:
        section.items.append(Reason(examples.reason))
    else:
        tables["examples_to_target"] = examples.value
        shown = shown.merge(examples.value[["batch_size", "examples", "examples_lower",
                                            "examples_upper"]], on="batch_size", how="left")
    critical = a.results["critical"]
    if (steps.value["steps"] > 0).any() and not critical.reason:
        png = figures.steps_figure(regimes.value, examples.value, critical.value["cbs"],
                                   a.study.target)
        section.items.append(Figure("steps_to_target", png, "Steps (left) and examples "
                                    "(right) to target of the best trial per batch size, "
                                    "coloured by regime."))
    else:
        section.items.append(Reason(
            f"no batch size has a trial with status ok that reached the target "
            f"{target_text(a.study)} with steps > 0: " + reasons_of(steps.value)))
    section.items.append(Table(display(shown, FRONTIER_COLUMNS), "", "steps_to_target"))
    return section, tables


CRITICAL_LABELS = {"mccandlish_fit": "McCandlish et al. 2018 fit",
                   "zhang_20pct": "Zhang et al. 2024 20% rule",
                   "gns_simple": "gradient noise scale B_simple (measured)"}


def critical_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """B_crit three ways (fit, 20% rule, noise scale) and the noise scale over training."""
    section = Section("Critical batch size")
    critical, gns, curves = (a.results[k] for k in ("critical", "gns", "gns_curves"))
    if critical.reason:
        section.items.append(Reason(critical.reason))
        return section, {}
    table = critical.value["table"]
    tables = {"critical_batch_size": table,
              "critical_batch_size_points": critical.value["cbs"].points}
    section.items.append(Text(
        "McCandlish et al. (2018): steps and examples trade off as "
        "(S/S_min - 1)(E/E_min - 1) = 1 with B_crit = E_min/S_min, and the simple gradient "
        "noise scale B_simple = tr(Sigma)/|G|^2 predicts B_crit. Zhang et al. (2024): the "
        "batch size at which steps to target are 20% above perfect linear scaling. "
        "A dash means not computed; the reason column says why."))
    shown = table.assign(method=table["method"].map(CRITICAL_LABELS).fillna(table["method"]))
    section.items.append(Table(display(shown, ["method", "b_crit", "lower", "upper", "s_min",
                                               "e_min", "how", "reason"]), "",
                               "critical_batch_size"))
    if gns.reason:
        section.items.append(Reason(gns.reason))
    elif len(gns.value):
        tables["gns"] = gns.value
        section.items.append(Table(display(gns.value), "final_gns_simple of the best trial per "
                                   "batch size", "gns"))
    if curves.reason:
        section.items.append(Reason(curves.reason))
    else:
        section.items.append(Figure("gns", figures.gns_figure(curves.value["rows"]),
                                    curves.value["caption"]))
    return section, tables


LR_COLUMNS = ["parameter", "exponent", "exponent_lower", "exponent_upper", "coefficient",
              "r_squared", "n_points", "linear_rule_in_ci", "sqrt_rule_in_ci", "constant_in_ci",
              "reason"]


def lr_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """The best learning rate (and warmup) per B, the fitted power law and the two rules."""
    section = Section("Learning rate and warmup against batch size")
    lr = a.results["lr"]
    if lr.reason:
        section.items.append(Reason(lr.reason))
        return section, {}
    fits = lr.value.fits
    section.items.append(Text(
        "log(value) = a + k log(B) fitted by least squares to the best trial of each batch "
        f"size (learning_rate as used; warmup_epochs, trials without warmup left out); "
        f"{CI:.0%} interval on the exponent k. Reference lines through the smallest batch "
        "size's best value: the linear rule k = 1 (Goyal et al. 2017) and the square-root "
        "rule k = 0.5 (Hoffer et al. 2017); for warmup, constant in epochs (k = 0, Goyal et al.)."
    ))
    section.items.append(Table(display(fits, LR_COLUMNS), "", "lr_scaling"))
    for fit in fits[fits["reason"].notna()].itertuples():
        words = f"{fit.parameter}: {fit.reason}"
        section.items.append(Reason(words) if math.isnan(fit.exponent) else Text(f"Note: {words}"))
    if (pd.to_numeric(lr.value.points["learning_rate"]) > 0).any():
        png = figures.lr_figure(lr.value, "learning_rate", "warmup_epochs")
        section.items.append(Figure("lr_scaling", png, "Best trial's learning rate (and "
                                    "warmup) per batch size, the fitted power law and the "
                                    "reference rules."))
    elif not fits["reason"].notna().any():
        section.items.append(Reason("no batch size has a best trial with a learning_rate > 0"))
    return section, {"lr_scaling": fits}


def gap_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """Generalization gap of the best trial against B, a line per normalization."""
    section = Section("Generalization gap against batch size, by normalization")
    gap = a.results["gap"]
    if gap.reason:
        section.items.append(Reason(gap.reason))
        return section, {}
    section.items.append(Text(
        "final_gap_accuracy = train accuracy - validation accuracy and final_gap_loss = "
        "validation loss - train loss at the last evaluation, of the best trial (by "
        "final_objective, status ok) for each normalization and batch size (Keskar et al. "
        "2017; Hoffer et al. 2017). gap_median: median over all ok trials there."))
    columns = [c for c in GAP_COLUMNS if gap.value["gap"].eq(c).any()]
    for column in columns:
        part = gap.value[gap.value["gap"] == column]
        pivot = part.pivot(index="norm", columns="batch_size", values="gap_of_best")
        pivot.columns = [f"B={fmt(c)}" for c in pivot.columns]
        section.items.append(Table(display(pivot.reset_index()), f"{column} of the best trial",
                                   "gap_by_norm"))
    if gap.value["gap_of_best"].notna().any():
        section.items.append(Figure("gap_by_norm", figures.gap_figure(gap.value, columns),
                                    "Generalization gap of the best trial against batch size, "
                                    "one line per normalization."))
    else:
        section.items.append(Reason("no best trial has a gap value: "
                                    + reasons_of(gap.value, "norm")))
    return section, {"gap_by_norm": gap.value}


THROUGHPUT_COLUMNS = ["batch_size", "workers", "trial_id", "throughput", "n_trials",
                      "speedup_vs_smallest_batch", "efficiency_workers", "reason"]


def throughput_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """Fastest throughput per (B, workers), batch scaling and worker-scaling efficiency."""
    section = Section("Throughput against batch size and workers")
    result = a.results["throughput"]
    if result.reason:
        section.items.append(Reason(result.reason))
        return section, {}
    frame = result.value
    section.items.append(Text(
        "throughput: training examples per second (evaluation excluded) of the fastest trial "
        "with status ok or pruned per (batch size, workers). speedup_vs_smallest_batch: "
        "throughput over that at the smallest batch size on the same workers. "
        "efficiency_workers: throughput(B, w) / (w x throughput(B, 1)), 1 = perfect "
        "scaling over workers at a fixed global batch (as in Goyal et al. 2017)."))
    section.items.append(Table(display(frame, THROUGHPUT_COLUMNS), "", "throughput"))
    if frame["throughput"].notna().any():
        section.items.append(Figure("throughput", figures.throughput_figure(frame),
                                    "Throughput, batch scaling and (when measured) worker "
                                    "scaling efficiency against batch size."))
    else:
        section.items.append(Reason("no throughput measured: " + reasons_of(frame)))
    return section, {"throughput": frame}


PARETO_COLUMNS = ["trial_id", "batch_size", "norm", "workers", "learning_rate",
                  "final_objective", "seconds_to_target", "steps_to_target"]


def pareto_section(a: Analyses) -> tuple[Section, dict[str, pd.DataFrame]]:
    """Trials that no other beats on both final objective and seconds to target."""
    section = Section("Pareto front: final objective and time to target")
    result = a.results["pareto"]
    if result.reason:
        section.items.append(Reason(result.reason))
        return section, {}
    frame = result.value
    competing = int(frame["reason"].isna().sum())
    on_front = frame[frame["on_front"]]
    section.items.append(Text(
        f"Trials with status ok that reached the target {target_text(a.study)}: {competing} "
        f"competed, {len(on_front)} on the front ({_better(a)} final_objective, lowest "
        "seconds_to_target = training seconds to the first evaluation reaching the target)."))
    if competing:
        section.items.append(Figure("pareto", figures.pareto_figure(
            frame, "seconds_to_target", "final_objective"), "Every competing trial; the "
            "Pareto front in orange."))
        section.items.append(Table(display(on_front, PARETO_COLUMNS), "Trials on the front",
                                   "pareto"))
    else:
        kinds = frame["reason"].value_counts()
        section.items.append(Reason("no trial competed: " + "; ".join(
            f"{n} trials: {r}" for r, n in kinds.items())))
    return section, {"pareto": frame}


SECTIONS = (summary_section, best_section, steps_section, critical_section, lr_section,
            gap_section, throughput_section, pareto_section)


def build_sections(a: Analyses) -> tuple[list[Section], dict[str, pd.DataFrame]]:
    """Every section of the report, and the full tables to write as CSV."""
    sections, tables = [], {}
    for build in SECTIONS:
        section, more = build(a)
        sections.append(section)
        tables.update(more)
    return sections, tables


# ---------------------------------------------------------------------------------------------
# Rendering: HTML (self-contained) and Markdown

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1320px;color:#222;line-height:1.45;padding:0 16px}
.wide{overflow-x:auto}
h1{font-size:1.6em;border-bottom:2px solid #3b5b92;padding-bottom:6px}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.85em}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top;
white-space:nowrap}td:last-child{white-space:normal;min-width:12em;max-width:40em}
th{background:#eef1f6}tr:nth-child(even) td{background:#fafafa}
.reason{background:#fff4e5;border-left:4px solid #e69f00;padding:6px 10px}
.caption{color:#555;font-size:0.9em;margin:4px 0}
figure{margin:12px 0}img{max-width:100%;height:auto;border:1px solid #eee}
nav a{margin-right:12px}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page: inline CSS, figures as data: URIs, everything escaped."""
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = [f"<h1>{html.escape(title)}</h1>", f"<nav>{nav}</nav>"]
    for i, section in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        body.extend(_html_item(item) for item in section.items)
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _html_item(item: Text | Reason | Table | Figure) -> str:
    """One item as HTML; its text escaped."""
    if isinstance(item, Text):
        return f"<p>{html.escape(item.text)}</p>"
    if isinstance(item, Reason):
        return f'<p class="reason"><b>Not computed:</b> {html.escape(item.text)}</p>'
    if isinstance(item, Figure):
        data = base64.b64encode(item.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(item.caption)}"><figcaption class="caption">'
                f"{html.escape(item.caption)}</figcaption></figure>")
    caption = _caption(item)
    table = item.frame.to_html(index=False, escape=True, border=0, na_rep=MISSING)
    return ((f'<p class="caption">{html.escape(caption)}</p>' if caption else "")
            + f'<div class="wide">{table}</div>')


def _caption(table: Table) -> str:
    """A table's caption with the name of its CSV file."""
    csv = f"full table: {table.csv}.csv" if table.csv else ""
    if table.caption and csv:
        return f"{table.caption} ({csv})"
    return table.caption or csv.capitalize()


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md_text(text: object) -> str:
    """User or report text for Markdown: HTML-escaped, Markdown syntax backslash-escaped."""
    escaped = html.escape(str(text), quote=False).replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", escaped)


def md_table(frame: pd.DataFrame) -> str:
    """A formatted frame as a Markdown table, every cell escaped."""
    header = "| " + " | ".join(md_text(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(md_text(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are the PNG files written beside it."""
    lines = [f"# {md_text(title)}", ""]
    for section in sections:
        lines += [f"## {md_text(section.title)}", ""]
        for item in section.items:
            lines += [_md_item(item), ""]
    return "\n".join(lines)


def _md_item(item: Text | Reason | Table | Figure) -> str:
    """One item as Markdown; its text escaped."""
    if isinstance(item, Text):
        return md_text(item.text)
    if isinstance(item, Reason):
        return f"> **Not computed:** {md_text(item.text)}"
    if isinstance(item, Figure):
        return f"![{md_text(item.caption)}]({item.name}.png)\n\n*{md_text(item.caption)}*"
    caption = _caption(item)
    return (f"*{md_text(caption)}*\n\n" if caption else "") + md_table(item.frame)


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(run_dir: Path, out_dir: Path | None = None) -> ReportPaths:
    """Analyse the run directory ``run_dir`` and write the report into ``out_dir``.

    ``out_dir`` defaults to ``run_dir / "report"``. Writes report.html, report.md, one PNG
    per figure and one CSV per analysis table, and returns their paths. Raises ``UserError``
    only when ``run_dir`` is not a run directory (neither result tables nor study.json).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    trials, history, notes = read_tables(run_dir)
    study = replace(read_study(run_dir), results_written=_modified(run_dir))
    trials = add_targets_from_history(trials, history, study, notes)
    sections, tables = build_sections(analyze(trials, history, study, tuple(notes)))
    title = f"lbt-study report: {study.meta.get('name', run_dir.name)}"
    return _write(out_dir, title, sections, tables)


def _modified(run_dir: Path) -> str | None:
    """When the trials table was last written (local time, seconds), if it exists."""
    for name in ("trials.parquet", "trials.csv"):
        path = run_dir / name
        if path.is_file():
            stamp = dt.datetime.fromtimestamp(path.stat().st_mtime)
            return stamp.isoformat(timespec="seconds")
    return None


def _write(out_dir: Path, title: str, sections: list[Section],
           tables: dict[str, pd.DataFrame]) -> ReportPaths:
    """Write the documents, figures and CSVs; remove this report's files left from before."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = [item for s in sections for item in s.items if isinstance(item, Figure)]
    figure_paths = {f.name: out_dir / f"{f.name}.png" for f in shown}
    table_paths = {name: out_dir / f"{name}.csv" for name in tables}
    for stale in [*(out_dir / f"{n}.png" for n in FIGURES if n not in figure_paths),
                  *(out_dir / f"{n}.csv" for n in TABLES if n not in table_paths)]:
        stale.unlink(missing_ok=True)
    for figure in shown:
        figure_paths[figure.name].write_bytes(figure.png)
    for name, frame in tables.items():
        frame.to_csv(table_paths[name], index=False)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(render_html(title, sections), encoding="utf-8")
    md_path.write_text(render_markdown(title, sections), encoding="utf-8")
    return ReportPaths(out_dir, html_path, md_path, figure_paths, table_paths)
