"""An adaptive per-batch-size study: when to stop, and where the next trials go.

Pure functions over the trials table (and the rounds the driver recorded), used between
rounds by ``lbt_study.study.rounds`` and by the report.

**Where the interval stands** (``interval_state``): B_crit and its trial-bootstrap interval
from ``critical_batch_size_bootstrap`` (the numbers the report shows), its relative width
(hi - lo) / estimate, and, when asked, the LR exponent k and its interval from ``lr_scaling``.

**The stop rule** (``stop_decision``): stop when the trials spent reach the budget; else stop
when every batch size has ``min_trials`` trials or more and the relative width is at most
``b_crit_rel_width`` (and the LR exponent's interval at most ``lr_exponent_width`` wide, if
asked); else go on.

**The allocation rule** (``interval_influence``, ``allocate``): a batch size deserves more
trials when its frontier point's noise is what keeps the interval wide. The bootstrap that
gives the interval resamples every batch size's trials; ``interval_influence`` redoes it with
one batch size's point held exact (its column of the resampled minima replaced by the point,
the other columns the same draws: common random numbers), and the influence of that batch
size is how much the interval's spread (in doublings, log2 hi - log2 lo, the ends clipped to
[B_min / 4, B_max x 4] so that an unbounded interval still has a size) shrinks. More trials
make a point more exact: the fastest of n trials scatters about the best-tuned value by about
1/n of the trials' spread near it, so going from n to n + 1 trials removes the share
n0 (1/n - 1/(n + 1)) of the noise present at n0 trials, and ``allocate`` hands out the
round's trials one at a time to the largest influence x n0 / (n (n + 1)) (ties: fewest
trials, then nearest in log2 B to the B_crit estimate, then the smaller B). Two limits keep
the frontier honest: a batch size below ``min_trials`` is filled first, and none may exceed
``max_trials_ratio`` times the trials of the least-tried batch size, since a minimum over
more trials is lower and uneven counts bias B_crit (``critical_batch_size_bootstrap``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import CannotCompute, eligible, require
from lbt_study.analysis.frontier import resampled_minima, trial_groups
from lbt_study.analysis.lr import lr_scaling
from lbt_study.analysis.scaling import _refit, critical_batch_size_bootstrap

NOT_ADAPTIVE = ("not an adaptive study (no Study(stop_when=...)): every batch size got its "
                "trials up front")
ADJUSTS = ("bonferroni", "none")  # StopWhen.adjust: the level of the interval at each look
ALLOCATIONS = ("balanced", "nearest", "influence")  # StopWhen.allocation
CLIP = 4.0  # the influence's spread clips B_crit to [B_min / CLIP, B_max * CLIP]
METRIC = "steps_to_target"


def rel_width(estimate: float, lower: float, upper: float) -> float:
    """(upper - lower) / estimate: inf for an unbounded end, NaN without an estimate."""
    if not (math.isfinite(estimate) and estimate > 0) or math.isnan(lower) or math.isnan(upper):
        return math.nan
    return (upper - lower) / estimate


def looks_of(first: int, round_trials: int, max_trials: int) -> int:
    """How many times an adaptive study can look at its interval: after round 0 (``first``
    trials) and after each round of ``round_trials`` until ``max_trials`` are spent."""
    return 1 + max(0, math.ceil((max_trials - first) / round_trials))


def look_level(ci: float, looks: int, adjust: str) -> float:
    """The level of the interval at each look: ``ci`` itself for ``adjust="none"``; for
    "bonferroni" 1 - (1 - ci) / looks, so that the interval the study stops with, whichever
    look that is, misses with probability at most 1 - ci (the union bound over the looks)."""
    if adjust not in ADJUSTS:
        raise ValueError(f"adjust must be one of {list(ADJUSTS)}, got {adjust!r}")
    return ci if adjust == "none" else 1 - (1 - ci) / looks


def interval_state(trials: pd.DataFrame, direction: str, *, lr: bool = False,
                   n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                   statuses: Sequence[str] | None = ("ok",),
                   lr_statuses: Sequence[str] | None = ("ok",),
                   resample: str = "residuals") -> dict[str, Any]:
    """B_crit, its interval and relative width (``critical_batch_size_bootstrap`` over the
    trials with ``statuses``); with ``lr`` the LR exponent and its interval width
    (``lr_scaling`` over ``lr_statuses``). NaN values carry a ``reason``."""
    out: dict[str, Any] = dict.fromkeys(("b_crit", "lower", "upper", "rel_width",
                                         "lr_exponent", "lr_width"), math.nan)
    out["level"] = ci
    reasons = []
    try:
        cbs = critical_batch_size_bootstrap(trials, direction, n_boot=n_boot, seed=seed,
                                            ci=ci, statuses=statuses, resample=resample)
        out.update(b_crit=cbs.b_crit_fit, lower=cbs.b_crit_fit_lower,
                   upper=cbs.b_crit_fit_upper)
        if cbs.fit_reason and not math.isfinite(cbs.b_crit_fit):
            reasons.append(cbs.fit_reason)
    except CannotCompute as exc:
        reasons.append(f"no B_crit: {exc}")
    out["rel_width"] = rel_width(out["b_crit"], out["lower"], out["upper"])
    if lr:
        try:
            fits = lr_scaling(trials, direction, ci=ci, statuses=lr_statuses).fits
            row = fits[fits["parameter"] == "learning_rate"].iloc[0]
            out.update(lr_exponent=float(row["exponent"]),
                       lr_width=float(row["exponent_upper"] - row["exponent_lower"]))
        except CannotCompute as exc:
            reasons.append(f"no LR exponent: {exc}")
    out["reason"] = "; ".join(reasons) or None
    return out


def trial_counts(trials: pd.DataFrame, batch_sizes: Sequence[int]) -> dict[int, int]:
    """Trials (any status) at each of ``batch_sizes``: what was spent there."""
    seen = (trials["batch_size"].astype(int).value_counts() if "batch_size" in trials
            else pd.Series(dtype=int))
    return {int(b): int(seen.get(int(b), 0)) for b in batch_sizes}


def stop_decision(state: Mapping[str, Any], counts: Mapping[int, int], *,
                  b_crit_rel_width: float, max_trials: int, min_trials: int,
                  lr_exponent_width: float | None = None) -> tuple[str, str]:
    """("stop" or "continue", why) for the interval ``state`` after ``counts`` trials: stop
    when the interval rule holds (the reason also says when the budget is spent too), else
    when the budget is spent, else continue with what is missing."""
    spent = sum(counts.values())
    budget = f"budget spent: {spent} of max_trials {max_trials} trials"
    missing = _missing(state, counts, b_crit_rel_width, min_trials, lr_exponent_width)
    if missing is None:
        lr = "" if lr_exponent_width is None else \
            f"; LR exponent interval {_num(state['lr_width'])} wide <= {lr_exponent_width:g}"
        also = f" (and the {budget})" if spent >= max_trials else ""
        return "stop", f"{_shown(state)} <= {b_crit_rel_width:g}{lr}{also}"
    if spent >= max_trials:
        return "stop", f"{budget}; the interval rule did not hold: {missing}"
    return "continue", missing


def _shown(state: Mapping[str, Any]) -> str:
    level = f" ({state['level']:.4g} interval)" if "level" in state else ""
    return (f"B_crit {_num(state['b_crit'])} [{_num(state['lower'])}, "
            f"{_num(state['upper'])}]{level}, relative width {_num(state['rel_width'])}")


def _missing(state: Mapping[str, Any], counts: Mapping[int, int], b_crit_rel_width: float,
             min_trials: int, lr_exponent_width: float | None) -> str | None:
    """What keeps the interval rule from holding (None when it holds)."""
    few = sorted(b for b, n in counts.items() if n < min_trials)
    if few:
        return f"batch sizes {few} have fewer than min_trials {min_trials} trials"
    width = state["rel_width"]
    if math.isnan(width):
        return f"{_shown(state)} ({state.get('reason') or 'no interval'})"
    if not width <= b_crit_rel_width:
        return f"{_shown(state)} > {b_crit_rel_width:g}"
    if lr_exponent_width is not None and not state["lr_width"] <= lr_exponent_width:
        return (f"{_shown(state)} <= {b_crit_rel_width:g}, but the LR exponent's interval "
                f"is {_num(state['lr_width'])} wide > {lr_exponent_width:g}")
    return None


def _num(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float | int) else str(value)


def interval_influence(trials: pd.DataFrame, direction: str, *, n_boot: int = 500,
                       seed: int = 0, ci: float = 0.95,
                       statuses: Sequence[str] | None = ("ok",)) -> pd.DataFrame:
    """Per batch size: n_trials (resampled), n_reached, spread (log2 hi - log2 lo of the
    bootstrap refits, clipped; see the module docstring), spread_if_exact (the same with
    this batch size's point held exact) and influence = max(0, spread - spread_if_exact).
    A batch size without a trial that reached the target has influence 0."""
    pool = eligible(trials, statuses, "interval_influence")
    groups = trial_groups(pool, METRIC, ["batch_size"])
    batch = np.array([key[0] for key in groups], dtype=float)
    values = list(groups.values())
    minima = resampled_minima(values, n_boot, np.random.default_rng(seed))
    base = _spread(batch, minima, ci)
    rows = []
    for j, b in enumerate(batch):
        exact = minima.copy()
        exact[:, j] = values[j][0]  # the point itself (inf when none reached)
        spread = _spread(batch, exact, ci) if math.isfinite(values[j][0]) else base
        rows.append({"batch_size": int(b), "n_trials": len(values[j]),
                     "n_reached": int(np.isfinite(values[j]).sum()), "spread": base,
                     "spread_if_exact": spread, "influence": max(0.0, base - spread)})
    return pd.DataFrame(rows, columns=["batch_size", "n_trials", "n_reached", "spread",
                                       "spread_if_exact", "influence"])


def _spread(batch: np.ndarray, minima: np.ndarray, ci: float) -> float:
    """log2 of the ``ci`` interval's hi / lo over refits of the rows of ``minima``, each end
    clipped to [B_min / CLIP, B_max x CLIP]; a refit without an answer (NaN) counts low for
    the lower end and high for the upper, as in ``refit_bootstrap``."""
    if len(batch) < 3:
        return math.nan
    distinct, which = np.unique(minima, axis=0, return_inverse=True)
    samples = np.array([_refit(batch, row) for row in distinct])[which.ravel()]
    low, high = batch.min() / CLIP, batch.max() * CLIP
    tail = (1 - ci) / 2
    lo = np.quantile(np.clip(np.where(np.isnan(samples), 0, samples), low, high), tail,
                     method="inverted_cdf")
    hi = np.quantile(np.clip(np.where(np.isnan(samples), np.inf, samples), low, high),
                     1 - tail, method="inverted_cdf")
    return float(np.log2(hi) - np.log2(lo))


def allocate(counts: Mapping[int, int], influence: Mapping[int, float], n_new: int, *,
             min_trials: int, max_ratio: float, b_crit: float = math.nan,
             rule: str = "influence") -> dict[int, int]:
    """The next round's ``n_new`` trials per batch size (every key of ``counts``), one at a
    time by ``rule`` (``ALLOCATIONS``, module docstring); ``influence`` (used by "influence"
    only) missing for a B counts 0."""
    if rule not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {rule!r}")
    start = {int(b): int(n) for b, n in counts.items()}
    now = dict(start)
    for _ in range(n_new):
        fewest = min(now.values())
        below = [b for b in now if now[b] < min_trials]
        allowed = below or [b for b in now if now[b] + 1 <= max_ratio * fewest
                            or now[b] == fewest]
        best = max(allowed, key=lambda b: _priority(b, now[b], start[b], influence, b_crit,
                                                    rule if not below else "balanced"))
        now[best] += 1
    return {b: now[b] - start[b] for b in now}


def _priority(b: int, n: int, n0: int, influence: Mapping[int, float], b_crit: float,
              rule: str) -> tuple[float, ...]:
    """The greedy step's sort key (largest first). "influence": marginal gain, then fewest
    trials, then nearest to B_crit (in log2 B), then the smaller B; "balanced": fewest
    trials, then nearest; "nearest": nearest, then fewest."""
    distance = abs(math.log2(b / b_crit)) if math.isfinite(b_crit) and b_crit > 0 else 0.0
    if rule == "nearest":
        return (-round(distance, 12), -n, -b)
    gain = influence.get(b, 0.0) * n0 / (n * (n + 1)) if rule == "influence" and n > 0 else 0.0
    return (round(gain, 12), -n, -distance, -b)


def added_text(added: Mapping[Any, int]) -> str:
    """{16: 2, 32: 0, 64: 1} as "16:2 64:1" (the batch sizes that got trials)."""
    return " ".join(f"{b}:{n}" for b, n in sorted(added.items(), key=lambda kv: int(kv[0]))
                    if n) or "-"


ROUND_COLUMNS = ("round", "trials_added", "added", "influence", "trials_total", "b_crit",
                 "lower", "upper", "level", "rel_width", "lr_exponent", "lr_width", "decision",
                 "reason")


def rounds_table(rounds: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The driver's round records (study.json ``adaptive_rounds``) as a table, one row per
    round (``ROUND_COLUMNS``; ``added`` as text, e.g. "16:2 64:1", and ``influence``, the
    influences the allocation of the round's trials went by, e.g. "16:0.09 64:0")."""
    rows = []
    for rec in rounds:
        added = {int(b): int(n) for b, n in (rec.get("added") or {}).items()}
        influence = " ".join(f"{b}:{float(v):.3g}" for b, v in sorted(
            (rec.get("influence") or {}).items(), key=lambda kv: int(kv[0])))
        rows.append({**{c: rec.get(c, math.nan) for c in ROUND_COLUMNS},
                     "trials_added": sum(added.values()), "added": added_text(added),
                     "influence": influence or None})
    frame = pd.DataFrame(rows, columns=list(ROUND_COLUMNS))
    for column in ("b_crit", "lower", "upper", "level", "rel_width", "lr_exponent",
                   "lr_width"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def uniform_cost(trials: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the trials spent and their mean examples_seen and train_seconds, and
    the estimated cost of a uniform sweep giving every batch size as many trials as the
    most-tried one got here (uniform_trials), each trial costing this study's mean at its B.
    Every frontier point of that sweep rests on at least as many trials as here, so it is at
    least as precise everywhere: an estimate of what the same precision costs without
    adapting (it reuses this study's trials' costs; ASHA's stops included)."""
    require(trials, ["batch_size", "trial_id", "examples_seen", "train_seconds"], "uniform_cost")
    frame = trials.assign(examples_seen=pd.to_numeric(trials["examples_seen"]),
                          train_seconds=pd.to_numeric(trials["train_seconds"]))
    per = frame.groupby("batch_size").agg(trials=("trial_id", "size"),
                                          examples=("examples_seen", "sum"),
                                          train_seconds=("train_seconds", "sum"),
                                          mean_examples=("examples_seen", "mean"),
                                          mean_train_seconds=("train_seconds", "mean"))
    per["uniform_trials"] = int(per["trials"].max())
    per["uniform_examples"] = per["uniform_trials"] * per["mean_examples"]
    per["uniform_train_seconds"] = per["uniform_trials"] * per["mean_train_seconds"]
    return per.reset_index()


def compute_spent(per_batch: pd.DataFrame) -> pd.DataFrame:
    """Two rows, this adaptive study and the estimated uniform sweep (``uniform_cost``):
    trials, examples, train_seconds, and the adaptive study's share of each."""
    adaptive = [per_batch["trials"].sum(), per_batch["examples"].sum(),
                per_batch["train_seconds"].sum()]
    uniform = [per_batch["uniform_trials"].sum(), per_batch["uniform_examples"].sum(),
               per_batch["uniform_train_seconds"].sum()]
    frame = pd.DataFrame([adaptive, uniform], columns=["trials", "examples", "train_seconds"],
                         dtype=float,
                         index=["adaptive (this study)", "uniform sweep (estimated)"])
    frame.loc["adaptive / uniform"] = frame.iloc[0] / frame.iloc[1]
    return frame.rename_axis("what").reset_index()


@dataclass(frozen=True, eq=False)
class AdaptiveSummary:
    """What the report shows of an adaptive study.

    rounds: ``rounds_table`` of the rounds the driver recorded. stopped: the last decision
    and why, in words. stop_when: the rule (study.json's ``stop_when``). per_batch:
    ``uniform_cost`` (empty without trials). spent: ``compute_spent`` (empty likewise).
    """

    rounds: pd.DataFrame
    stopped: str
    stop_when: dict[str, Any]
    per_batch: pd.DataFrame
    spent: pd.DataFrame


def adaptive_summary(trials: pd.DataFrame, meta: Mapping[str, Any]) -> AdaptiveSummary | None:
    """The ``AdaptiveSummary`` of the trials and study.json ``meta`` (None for a study
    without stop_when)."""
    rule = meta.get("stop_when")
    if not rule:
        return None
    rounds = rounds_table(meta.get("adaptive_rounds") or [])
    per_batch = uniform_cost(trials) if len(trials) else pd.DataFrame()
    spent = compute_spent(per_batch) if len(per_batch) else pd.DataFrame()
    return AdaptiveSummary(rounds, _stopped(rounds), dict(rule), per_batch, spent)


def _stopped(rounds: pd.DataFrame) -> str:
    """The last decision of ``rounds`` and why, in words."""
    decided = rounds[rounds["decision"].isin(["stop", "continue"])]
    if decided.empty:
        return "no round has been analysed yet"
    last = int(decided["round"].iloc[-1])
    if decided["decision"].iloc[-1] == "stop":
        return f"stopped after round {last}: {decided['reason'].iloc[-1]}"
    return (f"not stopped: the driver ended after round {last} decided to continue "
            f"({decided['reason'].iloc[-1]}); lbt-study resume continues the rounds")
