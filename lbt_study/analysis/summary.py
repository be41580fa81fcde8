"""Every analysis of one study, run on its result tables before anything is drawn or worded.

``analyze(trials, history, study, settings=AnalysisSettings())`` runs the analysis functions of
this package on the trials and history tables (as ``load_results`` returns them) and keeps
each result as an ``Outcome`` (``lbt_study.analysis.outcome``), a field of ``Results``: a
value (a DataFrame, or the analysis' own frozen dataclass: ``CriticalEstimates``,
``GnsCurves``, ``LRScaling``, ``AdaptiveSummary``), or the reason there is none (no rows, no
direction, no target, a missing column, or what the analysis declared it cannot compute, its
``CannotCompute``). Nothing is made up, and for a finished, partial or failed study nothing
escapes but a bug: any other exception propagates. The settings the analyses ran with travel
in the returned ``Analyses``, so whatever words the results can read them instead of
repeating the numbers. Pure: tables in, DataFrames and dataclasses out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import missing_columns
from lbt_study.analysis.adam import AdamScaling, adam_scaling, is_adam_study
from lbt_study.analysis.adaptive import NOT_ADAPTIVE, AdaptiveSummary, adaptive_summary
from lbt_study.analysis.best import best_per_batch_size, gap_by_norm, pareto_front
from lbt_study.analysis.branched import cbs_over_training
from lbt_study.analysis.budgets import budgets_run, budgets_used, large_batch_gap
from lbt_study.analysis.by_target import trials_at
from lbt_study.analysis.critical import (
    CriticalEstimates,
    critical_estimates,
    critical_per_norm,
    critical_vs_crossing,
    critical_vs_target,
)
from lbt_study.analysis.diffusion import diffusion_fit
from lbt_study.analysis.frontier import steps_to_target_frontier
from lbt_study.analysis.lr import LRScaling, lr_scaling
from lbt_study.analysis.noise_scale import GnsCurves, gns_curves, gns_of_best
from lbt_study.analysis.outcome import NO_ROWS, Outcome, attempt, guard, run, then
from lbt_study.analysis.recommend import RECOMMEND_NEEDS, Recommendation, recommend
from lbt_study.analysis.scaling import classify_regimes
from lbt_study.analysis.settings import AnalysisSettings, StudyInfo
from lbt_study.analysis.throughput import throughput_frontier
from lbt_study.analysis.verdicts import verdicts
from lbt_study.records.schema import STATUSES

GAP_COLUMNS = ("gap_accuracy_at_target", "gap_loss_at_target", "final_gap_accuracy",
               "final_gap_loss")
"""The gaps compared, at the target first: there trials stand at equal validation quality."""
PARETO = (("final_objective", None), ("seconds_to_target", "minimize"))  # None: the study's
NOT_BRANCHED = "not a branched study (protocol='branched')"
ONE_BUDGET = "the study ran one budget"
Frame = Outcome[pd.DataFrame]


@dataclass(frozen=True, eq=False)
class Results:
    """Every analysis of one study, each an ``Outcome`` (its value's type after the name).

    status_counts, errors: ``status_counts``, ``error_counts`` (always a value). best,
    best_norm: ``best_per_batch_size`` by batch size, by norm and batch size. steps,
    examples: ``steps_to_target_frontier`` of steps and of examples; regimes:
    ``classify_regimes`` of the steps. gns: ``gns_of_best``. critical: ``critical_estimates``.
    critical_by_target: ``critical_vs_target`` (empty for one target). critical_by_crossing:
    ``critical_vs_crossing`` (B_crit under each target-crossing rule). critical_by_norm:
    ``critical_per_norm`` (empty with one norm); steps_by_norm: the steps frontier per norm and
    batch size. gns_curves:
    ``gns_curves``. lr, lr_by_norm: ``lr_scaling`` of all trials and per norm (no value and no
    reason with one norm). gap: ``gaps``; budgets: ``budgets_used``; gap_by_budget:
    ``large_batch_gap``; best_by_budget: the best trial per norm, budget and batch size.
    diffusion: ``diffusion_fit`` (empty without weight_distance). throughput:
    ``throughput_frontier``. pareto: ``pareto_front``. adaptive: ``adaptive_summary``.
    branched: ``cbs_over_training``. recommendation: ``recommend`` (what to run for each
    goal, and the leave-one-batch-size-out check of the fitted curve). verdicts: ``verdicts``
    (which of the literature's rules held on this workload). adam: ``adam_scaling`` (Adam
    studies only).
    """

    status_counts: Frame
    errors: Frame
    best: Frame
    best_norm: Frame
    steps: Frame
    examples: Frame
    regimes: Frame
    gns: Frame
    critical: Outcome[CriticalEstimates]
    critical_by_target: Frame
    critical_by_crossing: Frame
    critical_by_norm: Frame
    steps_by_norm: Frame
    gns_curves: Outcome[GnsCurves]
    lr: Outcome[LRScaling]
    lr_by_norm: Outcome[LRScaling]
    gap: Frame
    budgets: Frame
    gap_by_budget: Frame
    best_by_budget: Frame
    diffusion: Frame
    throughput: Frame
    pareto: Frame
    adaptive: Outcome[AdaptiveSummary]
    branched: Frame
    recommendation: Outcome[Recommendation]
    verdicts: Frame
    adam: Outcome[AdamScaling]


@dataclass(frozen=True, eq=False)
class Analyses:
    """Every analysis of one study (``results``), its tables, and the settings they ran with."""

    study: StudyInfo
    trials: pd.DataFrame
    history: pd.DataFrame
    notes: tuple[str, ...]
    results: Results
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)


def analyze(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo,
            notes: tuple[str, ...] = (), settings: AnalysisSettings | None = None) -> Analyses:
    """Run every analysis with ``settings``; each result is an ``Outcome`` of ``Results``."""
    s = settings if settings is not None else AnalysisSettings()
    d, ok = study.direction, s.statuses
    best = run(trials, study, ("batch_size", "final_objective"), "best trial",
               best_per_batch_size, trials, d, statuses=ok)
    steps, examples, regimes = _frontiers(trials, study, s)
    gns, gap = gns_of_best(best), gaps(trials, study, ok)
    lr = run(trials, study, ("batch_size", "learning_rate", "final_objective"),
             "lr scaling", lr_scaling, *lr_inputs(trials, study), ci=s.ci, statuses=ok)
    critical = critical_estimates(steps, gns, s, trials, d)
    results = Results(
        status_counts=Outcome(status_counts(trials)), errors=Outcome(error_counts(trials)),
        best=best,
        best_norm=run(trials, study, ("batch_size", "norm", "final_objective"),
                      "best trial per norm", best_per_batch_size, trials, d,
                      by=("norm", "batch_size"), statuses=ok),
        steps=steps, examples=examples, regimes=regimes, gns=gns,
        critical=critical,
        critical_by_target=critical_vs_target(trials, history, study, s),
        critical_by_crossing=critical_vs_crossing(trials, history, study, s),
        critical_by_norm=critical_per_norm(trials, study, s),
        steps_by_norm=run(trials, study, ("batch_size", "norm", "trial_id", "reached_target",
                                          "final_objective", "steps_to_target"),
                          "the steps frontier per norm", steps_to_target_frontier, trials,
                          study.direction, metric="steps_to_target", by=("norm", "batch_size"),
                          ci=s.ci,
                          statuses=s.frontier_statuses, needs_target=True),
        gns_curves=gns_curves(best, history, trials, d, s),
        lr=lr,
        lr_by_norm=lr_by_norm(trials, study, s), gap=gap,
        budgets=run(trials, study, ("budget",), "the budgets", budgets_used, trials),
        gap_by_budget=gap_by_budget(gap, trials),
        best_by_budget=best_by_budget(trials, study, ok),
        diffusion=diffusion(trials, history, ok),
        throughput=throughput(trials, s.throughput_statuses),
        pareto=run(trials, study, ("final_objective", "seconds_to_target"), "the Pareto front",
                   pareto_front, trials, [(c, w or d) for c, w in PARETO], statuses=ok,
                   needs_target=True),
        adaptive=(attempt("the adaptive rounds", adaptive_summary, trials, study.meta)
                  if study.meta.get("stop_when") else Outcome(reason=NOT_ADAPTIVE)),
        branched=branched_cbs(trials, history, study),
        recommendation=run(trials, study, RECOMMEND_NEEDS, "the recommendation", recommend,
                           trials, d, price_per_hour=s.price_per_hour, ci=s.ci,
                           statuses=s.frontier_statuses, needs_target=True),
        verdicts=verdict_table(trials, lr, critical, s),
        adam=(attempt("Adam-era scaling", adam_scaling, trials, d, study.target,
                      None if lr.reason else lr.value.points)
              if d is not None and is_adam_study(trials) else Outcome(reason=NOT_ADAM)))
    return Analyses(study, trials, history, tuple(notes), results, s)


def _frontiers(trials: pd.DataFrame, study: StudyInfo,
               s: AnalysisSettings) -> tuple[Frame, Frame, Frame]:
    """The steps and examples frontiers, and the regimes of the steps: each computed once
    (the critical batch size is fitted to this steps frontier, not to one of its own)."""
    columns = ("batch_size", "trial_id", "reached_target", "final_objective")
    steps, examples = (run(trials, study, (*columns, metric), f"the {metric} frontier",
                           steps_to_target_frontier, trials, study.direction, metric=metric,
                           ci=s.ci, statuses=s.frontier_statuses, needs_target=True)
                       for metric in ("steps_to_target", "examples_to_target"))
    regimes = then(steps, "regimes", classify_regimes, perfect_tol=s.perfect_tol,
                   plateau_tol=s.plateau_tol)
    return steps, examples, regimes


def best_by_budget(trials: pd.DataFrame, study: StudyInfo,
                   statuses: tuple[str, ...] = AnalysisSettings.statuses) -> Frame:
    """The best trial per norm, budget and batch size, when the study ran several budgets."""
    if budgets_run(trials) < 2:
        return Outcome(reason=ONE_BUDGET)
    return run(trials, study, ("batch_size", "norm", "budget", "final_objective"),
               "best trial per budget", best_per_batch_size, trials, study.direction,
               by=("norm", "budget", "batch_size"), statuses=statuses)


def branched_cbs(trials: pd.DataFrame, history: pd.DataFrame, study: StudyInfo) -> Frame:
    """The branched CBS over training, with the study's epsilon and EMA (study.json)."""
    settings = study.meta.get("branched")
    if study.meta.get("protocol") != "branched" or not settings:
        return Outcome(reason=NOT_BRANCHED)
    unset = [k for k in ("epsilon", "ema") if not isinstance(settings, dict)
             or not isinstance(settings.get(k), int | float)]
    if unset:
        return Outcome(reason=f"study.json's branched settings have no {' or '.join(unset)}")
    return attempt("the branched critical batch size", cbs_over_training, trials, history,
                   float(settings["epsilon"]), float(settings["ema"]))  # a loss: minimised


def lr_by_norm(trials: pd.DataFrame, study: StudyInfo,
               s: AnalysisSettings) -> Outcome[LRScaling]:
    """``lr_scaling`` of each normalization on its own (no value and no reason when the
    study has one norm: the overall fit is then the whole answer)."""
    if "norm" not in trials or trials["norm"].nunique() < 2:
        return Outcome(None)
    return run(trials, study, ("batch_size", "learning_rate", "final_objective", "norm"),
               "lr scaling per norm", lr_scaling, *lr_inputs(trials, study), by=("norm",),
               ci=s.ci, statuses=s.statuses)


def verdict_table(trials: pd.DataFrame, lr: Outcome[LRScaling],
                  critical: Outcome[CriticalEstimates], s: AnalysisSettings) -> Frame:
    """``verdicts`` from the lr fit and the noise scale against B_crit already computed."""
    if trials.empty:
        return Outcome(reason=NO_ROWS)
    ratio = None if critical.reason else critical.value.gns_ratio
    ratio = None if ratio is None or ratio.empty else ratio
    gns_reason = critical.reason or (None if ratio is not None else "no noise-scale ratio")
    return attempt("the verdicts", verdicts, trials, lr.value, lr.reason, ratio, gns_reason,
                   n_boot=s.n_boot, seed=s.seed, ci=s.ci)


LR_STEPS_METRIC = "log_steps_to_target"
NOT_ADAM = "no trial used an Adam-family optimizer (adamw, lamb)"


def lr_inputs(trials: pd.DataFrame, study: StudyInfo) -> tuple[pd.DataFrame, str, str]:
    """The trials, direction and metric the learning-rate fit uses (positionally, as
    ``lr_scaling`` takes them): the final objective in the study's direction; in a study
    whose every trial stops at the target (``stop_at_target``) the final objective sits at
    the target in every trial that reached it and says little about the lr, so there it is
    ln(steps_to_target), minimised (trials that never reached the target left out)."""
    stops = ("stop_at_target" in trials.columns and not trials.empty
             and bool(trials["stop_at_target"].eq(True).all())
             and "steps_to_target" in trials.columns and study.target is not None)
    if not stops:
        return trials, study.direction, "final_objective"
    logged = trials.assign(**{LR_STEPS_METRIC: np.log(trials["steps_to_target"])})
    return logged, "minimize", LR_STEPS_METRIC


def diffusion(trials: pd.DataFrame, history: pd.DataFrame,
              statuses: tuple[str, ...] = AnalysisSettings.statuses) -> Frame:
    """``diffusion_fit`` (an empty table for a history without weight_distance, as older
    run directories have)."""
    if trials.empty or missing_columns(trials, ("batch_size",)) or missing_columns(
            history, ("trial_id", "step", "weight_distance"), "history"):
        return Outcome(pd.DataFrame())
    return attempt("the distance from initialisation", diffusion_fit, trials, history,
                   statuses=statuses)


def gaps(trials: pd.DataFrame, study: StudyInfo,
         statuses: tuple[str, ...] = AnalysisSettings.statuses) -> Frame:
    """``gap_by_norm`` for the accuracy and the loss gap, stacked with a ``gap`` column."""
    present = [c for c in GAP_COLUMNS if c in trials.columns]
    reason = guard(trials, study, ("batch_size", "norm", "trial_id", "final_objective"))
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


def gap_by_budget(gap: Frame, trials: pd.DataFrame) -> Frame:
    """``large_batch_gap`` when the study ran more than one budget."""
    if gap.reason:
        return gap
    if budgets_run(trials) < 2:
        return Outcome(reason=ONE_BUDGET)
    return attempt("the gap by budget", large_batch_gap, gap.value)


def throughput(trials: pd.DataFrame,
               statuses: tuple[str, ...] = AnalysisSettings.throughput_statuses) -> Frame:
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
    if study.direction is None or missing_columns(
            history, ("trial_id", "step", "examples_seen", "objective"), "history"):
        return trials, ()
    note = ("the trials table has no steps_to_target column (an older lbt-study wrote it): "
            "steps, examples and seconds to target were measured from the history with "
            "time_to_target, interpolated at the crossing of the target")
    return trials_at(trials, history, study.target, study.direction,
                     study.target_crossing), (note,)
