"""Every analysis of one study, run on its result tables before anything is drawn or worded.

``analyze(trials, history, study, settings=AnalysisSettings())`` runs the analysis functions of
this package on the trials and history tables (as ``load_results`` returns them) and keeps
each result as an ``Outcome``: a value, or the reason there is none (no rows, no direction,
no target, a missing column, or the analysis' own ``ValueError``). Nothing is made up and no
exception escapes for a finished, partial or failed study. The settings the analyses ran
with travel in the returned ``Analyses``, so whatever words the results can read them
instead of repeating the numbers. Pure: tables in, DataFrames and dataclasses out.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lbt_study.analysis._checks import check_fraction, check_positive
from lbt_study.analysis.adaptive import NOT_ADAPTIVE, adaptive_summary
from lbt_study.analysis.best import best_per_batch_size, gap_by_norm, pareto_front
from lbt_study.analysis.branched import cbs_over_training
from lbt_study.analysis.budgets import budgets_run, budgets_used, large_batch_gap
from lbt_study.analysis.by_target import critical_by_target, trials_at
from lbt_study.analysis.diffusion import diffusion_fit
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.lr import lr_scaling
from lbt_study.analysis.scaling import (
    CriticalBatchSize,
    classify_regimes,
    critical_batch_size,
    critical_batch_size_bootstrap,
)
from lbt_study.analysis.throughput import throughput_frontier
from lbt_study.schema import STATUSES

GAP_COLUMNS = ("gap_accuracy_at_target", "gap_loss_at_target", "final_gap_accuracy",
               "final_gap_loss")
"""The gaps compared, at the target first: there trials stand at equal validation quality."""
PARETO = (("final_objective", None), ("seconds_to_target", "minimize"))  # None: the study's
NO_ROWS = "the trials table has no rows: no trial has finished"


def _default(fn: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of ``fn``: the settings follow the analyses."""
    return inspect.signature(fn).parameters[name].default


@dataclass(frozen=True)
class AnalysisSettings:
    """The parameters the analyses run with (defaults: those of the analysis functions).

    n_boot, seed: the trial-level bootstraps of the critical batch size and the lr
    exponent; ci: their level, the frontier's and every fitted interval's. zhang_excess:
    Zhang et al. (2024)'s critical batch size is where steps exceed perfect scaling by this
    fraction. perfect_tol, plateau_tol: the regime thresholds of ``classify_regimes``.
    statuses: the statuses that compete for best trial, frontier, fits, gaps and the Pareto
    front; frontier_statuses: those whose steps to target count on the frontier and in the
    critical batch size (``pruned`` too: a trial ASHA stopped after it reached the target
    measured its steps to the target; one stopped before counts as not reaching it, like an
    ok trial that never did); throughput_statuses: those whose speed counts.
    gns_points_per_trial: the noise-scale curves are thinned to about this many rows.
    """

    n_boot: int = _default(critical_batch_size_bootstrap, "n_boot")
    seed: int = _default(critical_batch_size_bootstrap, "seed")
    ci: float = _default(steps_to_target_frontier, "ci")
    zhang_excess: float = _default(critical_batch_size, "excess")
    perfect_tol: float = _default(classify_regimes, "perfect_tol")
    plateau_tol: float = _default(classify_regimes, "plateau_tol")
    statuses: tuple[str, ...] = tuple(_default(best_per_batch_size, "statuses"))
    frontier_statuses: tuple[str, ...] = ("ok", "pruned")
    throughput_statuses: tuple[str, ...] = tuple(_default(throughput_frontier, "statuses"))
    gns_points_per_trial: int = 200

    def __post_init__(self) -> None:
        check_fraction(self.ci, "ci")
        for name in ("n_boot", "zhang_excess", "gns_points_per_trial"):
            check_positive(getattr(self, name), name)
        for name in ("perfect_tol", "plateau_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("statuses", "frontier_statuses", "throughput_statuses"):
            unknown = [s for s in getattr(self, name) if s not in STATUSES]
            if unknown or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty tuple of {STATUSES}, "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StudyInfo:
    """What study.json says, and what it could not say (``problems``)."""

    meta: dict[str, Any]
    direction: str | None
    target: float | None
    problems: tuple[str, ...] = ()
    results_written: str | None = None  # when the trials table was last written
    targets: tuple[float, ...] = ()  # every threshold measured (the target among them)


@dataclass(frozen=True)
class Outcome:
    """An analysis result, or the reason there is none (exactly one is set)."""

    value: Any = None
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class Analyses:
    """Every analysis of one study, and the settings they ran with."""

    study: StudyInfo
    trials: pd.DataFrame
    history: pd.DataFrame
    notes: tuple[str, ...]
    results: dict[str, Outcome]
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)

    def value(self, key: str) -> Any:
        """The value of result ``key`` (None when it has a reason instead)."""
        return self.results[key].value


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
        return NO_ROWS
    if study.direction is None:
        return ("the objective's direction is unknown (see the study summary); lbt-study "
                "never guesses it from a name")
    if needs_target and study.target is None:
        return "the study has no target, so steps, examples and seconds to target are not measured"
    return missing_columns(trials, columns, "trials")


def _run(trials: pd.DataFrame, study: StudyInfo, columns: tuple[str, ...], what: str,
         fn: Callable[..., Any], *args: Any, needs_target: bool = False, **kwargs: Any) -> Outcome:
    """``fn(*args, **kwargs)`` unless ``_guard`` gives a reason not to start."""
    reason = _guard(trials, study, columns, needs_target)
    return Outcome(reason=reason) if reason else attempt(what, fn, *args, **kwargs)


def _then(previous: Outcome, what: str, fn: Callable[..., Any], **kwargs: Any) -> Outcome:
    """``fn`` of the previous result, or the previous reason."""
    return previous if previous.reason else attempt(what, fn, previous.value, **kwargs)


def analyze(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
            notes: tuple[str, ...] = (), settings: AnalysisSettings | None = None) -> Analyses:
    """Run every analysis with ``settings``; each result is an ``Outcome``."""
    s = settings if settings is not None else AnalysisSettings()
    d, ok = study.direction, s.statuses
    results = {"status_counts": Outcome(status_counts(trials)),
               "errors": Outcome(error_counts(trials))}
    results["best"] = _run(trials, study, ("batch_size", "final_objective"), "best trial",
                           best_per_batch_size, trials, d, statuses=ok)
    results["best_norm"] = _run(trials, study, ("batch_size", "norm", "final_objective"),
                                "best trial per norm", best_per_batch_size, trials, d,
                                by=("norm", "batch_size"), statuses=ok)
    frontier_cols = ("batch_size", "trial_id", "reached_target", "final_objective")
    for key, metric in (("steps", "steps_to_target"), ("examples", "examples_to_target")):
        results[key] = _run(trials, study, (*frontier_cols, metric), f"the {metric} frontier",
                            steps_to_target_frontier, trials, d, metric=metric, ci=s.ci,
                            statuses=s.frontier_statuses, needs_target=True)
    results["regimes"] = _then(results["steps"], "regimes", classify_regimes,
                               perfect_tol=s.perfect_tol, plateau_tol=s.plateau_tol)
    results["gns"] = gns_of_best(results["best"])
    results["critical"] = critical_estimates(results["steps"], results["gns"], s, trials, d)
    results["critical_by_target"] = critical_vs_target(trials, history, study, s)
    results["gns_curves"] = gns_curves(results["best"], history, trials, d, s)
    results["lr"] = _run(trials, study, ("batch_size", "learning_rate", "final_objective"),
                         "lr scaling", lr_scaling, trials, d, ci=s.ci, n_boot=s.n_boot,
                         seed=s.seed, statuses=ok)
    results["lr_by_norm"] = lr_by_norm(trials, study, s)
    results["gap"] = gaps(trials, study, ok)
    results["budgets"] = _run(trials, study, ("budget",), "the budgets", budgets_used, trials)
    results["gap_by_budget"] = gap_by_budget(results["gap"], trials)
    results["best_by_budget"] = (
        _run(trials, study, ("batch_size", "norm", "budget", "final_objective"),
             "best trial per budget", best_per_batch_size, trials, d,
             by=("norm", "budget", "batch_size"), statuses=ok)
        if budgets_run(trials) > 1 else Outcome(reason="the study ran one budget"))
    results["diffusion"] = diffusion(trials, history, ok)
    results["throughput"] = throughput(trials, s.throughput_statuses)
    objectives = [(column, direction or d) for column, direction in PARETO]
    results["pareto"] = _run(trials, study, ("final_objective", "seconds_to_target"),
                             "the Pareto front", pareto_front, trials, objectives, statuses=ok,
                             needs_target=True)
    results["adaptive"] = (attempt("the adaptive rounds", adaptive_summary, trials, study.meta)
                           if study.meta.get("stop_when") else Outcome(reason=NOT_ADAPTIVE))
    results["branched"] = branched_cbs(trials, history, study)
    return Analyses(study, trials, history, tuple(notes), results, s)


NOT_BRANCHED = "not a branched study (protocol='branched')"


def branched_cbs(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo) -> Outcome:
    """The branched CBS over training, with the study's epsilon and EMA (study.json)."""
    settings = study.meta.get("branched")
    if study.meta.get("protocol") != "branched" or not settings:
        return Outcome(reason=NOT_BRANCHED)
    return attempt("the branched critical batch size", cbs_over_training, trials, history,
                   float(settings["epsilon"]), float(settings["ema"]))  # a loss: minimised


GNS_COLUMNS = ("gns_at_target", "final_gns_probe", "final_gns_simple")
"""The trials table's noise-scale columns, shown per batch size beside the frontier."""


def lr_by_norm(trials: pd.DataFrame, study: StudyInfo, s: AnalysisSettings) -> Outcome:
    """``lr_scaling`` of each normalization on its own (None when the study has one norm:
    the overall fit is then the whole answer)."""
    if "norm" not in trials or trials["norm"].nunique() < 2:
        return Outcome(None)
    return _run(trials, study, ("batch_size", "learning_rate", "final_objective", "norm"),
                "lr scaling per norm", lr_scaling, trials, study.direction, by=("norm",),
                ci=s.ci, n_boot=s.n_boot, seed=s.seed, statuses=s.statuses)


def diffusion(trials: pd.DataFrame, history: pd.DataFrame,
              statuses: tuple[str, ...] = AnalysisSettings.statuses) -> Outcome:
    """``diffusion_fit`` (an empty table for a history without weight_distance, as older
    run directories have)."""
    if trials.empty or "batch_size" not in trials or not {"trial_id", "step",
                                                         "weight_distance"} <= set(history):
        return Outcome(pd.DataFrame())
    return attempt("the distance from initialisation", diffusion_fit, trials, history,
                   statuses=statuses)


def gns_of_best(best: Outcome) -> Outcome:
    """The noise-scale columns (``GNS_COLUMNS`` present) of the best trial (by final
    objective) at each batch size."""
    if best.reason:
        return best
    frame = best.value
    present = [c for c in GNS_COLUMNS if c in frame.columns]
    if not present:
        return Outcome(reason=missing_columns(frame, GNS_COLUMNS[1:], "trials"))
    rows = frame[frame["n_candidates"] > 0][["batch_size", "trial_id", *present]]
    return Outcome(rows.reset_index(drop=True))


def median_gns(gns: Outcome, steps: Outcome | None = None,
               trials: pd.DataFrame | None = None) -> tuple[float | None, str]:
    """The noise scale set beside B_crit, and the words for it: the median gns_at_target of
    the steps frontier's trials (the fastest per batch size; ``steps``) when ``trials`` has
    that column with a value for one of them; else the median final_gns_simple of the best
    trial by final objective per batch size (``gns``, from ``gns_of_best``)."""
    at_target = _median_gns_at_target(steps, trials)
    if at_target is not None:
        return at_target
    if gns.reason:
        return None, gns.reason
    if "final_gns_simple" not in gns.value:
        return None, "the trials table has no gns_at_target or final_gns_simple values"
    values = pd.to_numeric(gns.value["final_gns_simple"]).dropna()
    if values.empty:
        return None, ("no best trial has a final_gns_simple value (it is measured only with "
                      "more than one worker or with accumulation steps)")
    return float(values.median()), (f"median final_gns_simple of the best trial at "
                                    f"{len(values)} of {len(gns.value)} batch sizes")


def _median_gns_at_target(steps: Outcome | None,
                          trials: pd.DataFrame | None) -> tuple[float, str] | None:
    """The median gns_at_target of the frontier's trials and its words (None: no value)."""
    if steps is None or steps.reason or trials is None or "gns_at_target" not in trials:
        return None
    ids = steps.value["trial_id"].dropna()
    chosen = trials[trials["trial_id"].isin(ids)]
    values = pd.to_numeric(chosen["gns_at_target"]).dropna()
    if values.empty:
        return None
    return float(values.median()), (f"median gns_at_target of the fastest trial at "
                                    f"{len(values)} of {len(ids)} batch sizes")


def critical_estimates(steps: Outcome, gns: Outcome, settings: AnalysisSettings,
                       trials: pd.DataFrame | None = None,
                       direction: str | None = None) -> Outcome:
    """The critical batch size of the steps frontier (and the measured noise scale).

    With ``trials`` and ``direction``: ``critical_batch_size_bootstrap`` (B_crit's interval
    from refits to trial-level bootstrap resamples; the covariance interval a row of its
    own); without them, ``critical_batch_size`` of the frontier alone. Value: {"cbs":
    CriticalBatchSize, "table": one row per method with its interval, ratio_to_b_crit,
    S_min, E_min, how it was found, and why it is missing (or a note on it)}.
    """
    median, gns_words = median_gns(gns, steps, trials)
    s = settings
    if steps.reason or trials is None or direction is None:
        frontier = steps.value if not steps.reason else pd.DataFrame(
            {"batch_size": pd.Series(dtype=float), "steps": pd.Series(dtype=float)})
        result = attempt("the critical batch size", critical_batch_size, frontier, gns=median,
                         ci=s.ci, excess=s.zhang_excess)
    else:
        result = attempt("the critical batch size", critical_batch_size_bootstrap, trials,
                         direction, n_boot=s.n_boot, seed=s.seed, ci=s.ci,
                         excess=s.zhang_excess, gns=median, statuses=s.frontier_statuses)
    if result.reason:
        return result
    cbs = result.value
    table = cbs.estimates()
    table["reason"] = table["reason"].astype(object)
    if steps.reason:
        table.loc[table["method"] != "gns_simple", "reason"] = steps.reason
    table.loc[table["method"] == "gns_simple", "reason"] = gns_words if median is None else None
    how = critical_how(cbs, s, gns_words if median is not None else "no measurement")
    table["how"] = table["method"].map(how)
    fitted = table["method"].str.startswith("mccandlish")
    table["s_min"] = fitted.map({True: cbs.s_min, False: math.nan})
    table["e_min"] = fitted.map({True: cbs.e_min, False: math.nan})
    table = table[["method", "b_crit", "lower", "upper", "ratio_to_b_crit", "s_min", "e_min",
                   "how", "reason"]]
    return Outcome({"cbs": cbs, "table": table})


def critical_how(cbs: CriticalBatchSize, s: AnalysisSettings, gns_words: str) -> dict[str, str]:
    """How each row of ``CriticalBatchSize.estimates`` was found, in words."""
    fit = "S(B) = S_min (1 + B_crit/B) fitted to the steps frontier"
    boot = cbs.bootstrap
    interval = (f"{cbs.ci:.0%} percentile interval of the fit redone on {boot.n_boot} "
                f"trial-level bootstrap resamples (trials resampled within each batch size, "
                f"seed {boot.seed})" if boot is not None else
                f"{cbs.ci:.0%} interval from the fit's covariance")
    e = s.zhang_excess
    b0 = f"B0 = {cbs.b0:g}; " if math.isfinite(cbs.b0) else ""
    return {"mccandlish_fit": f"{fit}; {interval}",
            "mccandlish_fit_cov": f"the same fit; {cbs.ci:.0%} interval from the fit's "
                                  "covariance, which takes every frontier point as equally "
                                  "noisy, judged from their scatter about the curve",
            "zhang_20pct": f"steps {e:.0%} above perfect scaling from the smallest B ({b0}on "
                           f"a McCandlish curve {1 + e:g} B0 + {e:g} B_crit)",
            "gns_simple": gns_words}


def critical_vs_target(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
                       settings: AnalysisSettings) -> Outcome:
    """``critical_by_target`` over the study's targets, from the history; an empty table
    when the study has one target (the critical table is then the whole answer)."""
    if len(study.targets) < 2:
        return Outcome(pd.DataFrame())
    reason = _guard(trials, study, ("batch_size", "trial_id", "final_objective"), True)
    if reason is None:
        reason = missing_columns(history, ("trial_id", "step", "examples_seen", "objective"),
                                 "history")
    if reason:
        return Outcome(reason=reason)
    return attempt("the critical batch size by target", critical_by_target, trials, history,
                   study.targets, study.direction, statuses=settings.frontier_statuses,
                   ci=settings.ci,
                   excess=settings.zhang_excess, n_boot=settings.n_boot, seed=settings.seed)


def gns_curves(best: Outcome, history: pd.DataFrame, trials: pd.DataFrame,
               direction: str | None, settings: AnalysisSettings | None = None) -> Outcome:
    """History rows (examples_seen, gns_simple) to draw, thinned, with the words for them.

    The best trial per B; when none of them measured the noise scale, the best per B among
    the trials that did (the caption says which). Each trial's rows are thinned to about
    ``settings.gns_points_per_trial``. Value: {"rows": DataFrame, "caption": str}.
    """
    s = settings if settings is not None else AnalysisSettings()
    if best.reason:
        return best
    reason = missing_columns(history, ("trial_id", "examples_seen", "gns_simple"), "history")
    if reason:
        return Outcome(reason=reason)
    source = _gns_source(history)
    history = history.assign(gns_simple=pd.to_numeric(history[source]))
    rows = _gns_rows(best.value, history)
    caption = (f"Gradient noise scale B_simple ({source}) over training, for the best trial "
               "(by final_objective) at each batch size that measured it.")
    if rows.empty:
        measured = history.loc[pd.to_numeric(history["gns_simple"]).notna(), "trial_id"]
        subset = trials[trials["trial_id"].isin(measured)]
        fallback = attempt("best measuring trial", best_per_batch_size, subset, direction,
                           statuses=s.statuses)
        rows = pd.DataFrame() if fallback.reason or subset.empty else _gns_rows(
            fallback.value, history)
        caption = ("None of the best trials measured the noise scale: B_simple over training "
                   "for the best trial at each batch size among those that measured it "
                   "(more than one worker, or accumulation steps).")
    if rows.empty:
        return Outcome(reason="the history has no gns_simple values (the noise scale needs "
                              "more than one worker or accumulation steps)")
    position = rows.groupby("trial_id").cumcount()
    size = rows.groupby("trial_id")["trial_id"].transform("size")
    every = size // s.gns_points_per_trial + 1
    return Outcome({"rows": rows[position % every == 0].reset_index(drop=True),
                    "caption": caption})


def _gns_source(history: pd.DataFrame) -> str:
    """gns_probe (measured at every evaluation of every trial) where the history has it,
    else gns_simple (the DDP / accumulation estimator)."""
    if "gns_probe" in history and pd.to_numeric(history["gns_probe"]).notna().any():
        return "gns_probe"
    return "gns_simple"


def _gns_rows(best: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The history's finite gns_simple rows of the trials in ``best``, by B and examples."""
    chosen = best[best["n_candidates"] > 0][["trial_id", "batch_size"]]
    rows = history[["trial_id", "examples_seen", "gns_simple"]].merge(chosen, on="trial_id")
    rows = rows.assign(gns_simple=pd.to_numeric(rows["gns_simple"]))
    return rows[rows["gns_simple"].notna()].sort_values(["batch_size", "examples_seen"],
                                                        kind="stable")


def gaps(trials: pd.DataFrame, study: StudyInfo,
         statuses: tuple[str, ...] = AnalysisSettings.statuses) -> Outcome:
    """``gap_by_norm`` for the accuracy and the loss gap, stacked with a ``gap`` column."""
    present = [c for c in GAP_COLUMNS if c in trials.columns]
    reason = _guard(trials, study, ("batch_size", "norm", "trial_id", "final_objective"))
    if reason or not present:
        return Outcome(reason=reason or missing_columns(trials, GAP_COLUMNS, "trials"))
    parts = []
    within = ("budget",) if budgets_run(trials) > 1 else ()
    for column in present:
        got = attempt("the gap by norm", gap_by_norm, trials, study.direction, gap_col=column,
                      statuses=statuses, within=within)
        if got.reason:
            return got
        parts.append(got.value.assign(gap=column))
    return Outcome(pd.concat(parts, ignore_index=True))


def gap_by_budget(gap: Outcome, trials: pd.DataFrame) -> Outcome:
    """``large_batch_gap`` when the study ran more than one budget."""
    if gap.reason:
        return gap
    if budgets_run(trials) < 2:
        return Outcome(reason="the study ran one budget")
    return attempt("the gap by budget", large_batch_gap, gap.value)


def throughput(trials: pd.DataFrame,
               statuses: tuple[str, ...] = AnalysisSettings.throughput_statuses) -> Outcome:
    """``throughput_frontier``; it needs no direction."""
    if trials.empty:
        return Outcome(reason=NO_ROWS)
    reason = missing_columns(trials, ("batch_size", "workers", "throughput", "trial_id"), "trials")
    if reason:
        return Outcome(reason=reason)
    return attempt("throughput", throughput_frontier, trials, statuses=statuses)


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per status: every known status (zero included), then any other seen."""
    seen = (trials["status"].astype(str).value_counts() if "status" in trials
            else pd.Series(dtype=int))
    names = [*STATUSES, *sorted(set(seen.index) - set(STATUSES))]
    return pd.DataFrame({"status": names, "trials": [int(seen.get(s, 0)) for s in names]})


def error_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Distinct error messages with their count, statuses and batch sizes (most first)."""
    if "error" not in trials.columns or trials.empty:
        return pd.DataFrame()
    errors = trials[trials["error"].notna() & (trials["error"].astype(str) != "")]
    if errors.empty:
        return pd.DataFrame()
    grouped = errors.groupby(errors["error"].astype(str), sort=False)
    out = grouped.size().rename("trials").reset_index()
    for column in ("status", "batch_size"):
        if column in errors.columns:
            joined = grouped[column].agg(lambda s: ", ".join(sorted(map(str, s.unique()))))
            out[column] = joined.to_numpy()
    return out.sort_values("trials", ascending=False, kind="stable").reset_index(drop=True)


def add_targets_from_history(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo
                             ) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Older run directories lack the at-target columns: measure them with ``time_to_target``.

    Returns the trials (with reached_target and the at-target columns when they were
    measured) and the notes saying so (empty when nothing was done).
    """
    if "steps_to_target" in trials.columns or trials.empty or study.target is None:
        return trials, ()
    if study.direction is None or not {"trial_id", "step", "examples_seen",
                                       "objective"} <= set(history.columns):
        return trials, ()
    note = ("the trials table has no steps_to_target column (an older lbt-study wrote it): "
            "steps, examples and seconds to target were measured from the history with "
            "time_to_target, interpolated at the crossing of the target")
    return trials_at(trials, history, study.target, study.direction), (note,)
