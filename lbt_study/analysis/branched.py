"""The branched critical batch size over training (Merrill et al. 2025), from the tables.

Branch trials carry ``branch_of`` (the base trial), ``branch_fraction`` and ``branch_k``.
A branch's loss is its evaluations' ``loss_column`` (by default the mean minibatch loss of
the examples since the previous evaluation, branch evaluations being equally many examples
apart at every k) smoothed by a bias-corrected EMA in evaluation order (step 0, the common
starting point, excluded), read at its last evaluation. At each checkpoint the CBS is the
largest k x B0 such that every branch up to it ends within ``epsilon`` of the k = 1 branch
(relative: L_k <= (1 + epsilon) L_1 for a loss to minimise, L_k >= (1 - epsilon) L_1 for one
to maximise); when every k is within, the CBS is only a lower bound (``cbs_lower_bound``).
``b_simple`` is the base run's ``gns_probe`` at the evaluation nearest the checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lbt_study.analysis._checks import CannotCompute, missing_columns, require
from lbt_study.train.config import checkpoint_step

BRANCH_COLUMNS = ("trial_id", "status", "branch_of", "branch_fraction", "branch_k")


def smoothed_final(values: list[float], ema: float) -> float:
    """The bias-corrected EMA (factor ``ema``) of ``values`` at the last one (NaN if none):
    pandas' ``ewm(alpha=1 - ema, adjust=True)``, weights ema^i normalised to sum to 1."""
    if not values:
        return math.nan
    return float(pd.Series(values, dtype=float).ewm(alpha=1 - ema, adjust=True).mean().iloc[-1])


def branch_losses(trials: pd.DataFrame, history: pd.DataFrame, ema: float,
                  loss_column: str = "minibatch_loss") -> pd.DataFrame:
    """One row per branch: branch_of, branch_fraction, branch_k, loss (smoothed, final; NaN
    for a branch that did not finish ok: a diverged branch is not within epsilon)."""
    missing = missing_columns(trials, BRANCH_COLUMNS, "trials")
    if missing:
        raise CannotCompute(f"{missing}: not a branched study")
    branches = trials[trials["branch_of"].notna()]
    if not (branches["status"] == "ok").any():
        raise CannotCompute("no branch trial finished ok")
    missing = missing_columns(history, ("trial_id", "step", loss_column), "history")
    if missing:
        raise CannotCompute(missing)
    unset = branches[branches[["branch_fraction", "branch_k"]].isna().any(axis=1)]
    if len(unset):
        raise CannotCompute(f"branch trials {', '.join(map(str, unset['trial_id']))} have no "
                            "branch_fraction or branch_k")
    rows = []
    for _, t in branches.iterrows():
        h = history[(history["trial_id"] == t["trial_id"]) & (history["step"] > 0)]
        values = [float(v) for v in h.sort_values("step")[loss_column] if np.isfinite(v)]
        loss = smoothed_final(values, ema) if t["status"] == "ok" else math.nan
        rows.append({"branch_of": t["branch_of"], "branch_fraction": float(t["branch_fraction"]),
                     "branch_k": int(t["branch_k"]), "loss": loss})
    return pd.DataFrame(rows)


def _within(loss: float, reference: float, epsilon: float, direction: str) -> bool:
    if direction == "maximize":
        return loss >= (1 - epsilon) * reference
    return loss <= (1 + epsilon) * reference


def _nearest_probe(history: pd.DataFrame, base_id: str, step: int) -> float:
    """The base run's gns_probe at the evaluation nearest ``step`` (NaN if none)."""
    if "gns_probe" not in history.columns:
        return math.nan
    h = history[(history["trial_id"] == base_id) & history["gns_probe"].notna()]
    if h.empty:
        return math.nan
    return float(h.loc[(h["step"] - step).abs().idxmin(), "gns_probe"])


def _checkpoint_row(group: pd.DataFrame, base: pd.Series, history: pd.DataFrame,
                    epsilon: float, direction: str) -> dict:
    b0 = int(base["batch_size"])
    step = checkpoint_step(float(group["branch_fraction"].iloc[0]), int(base["total_steps"]))
    losses = dict(zip(group["branch_k"], group["loss"], strict=True))
    row: dict = {"branch_fraction": float(group["branch_fraction"].iloc[0]), "step": step,
                 "examples_seen": step * b0}
    row.update({f"loss_k{k}": losses[k] for k in sorted(losses)})
    reference = losses.get(1, math.nan)
    cbs, lower = math.nan, False
    if np.isfinite(reference):
        ks = sorted(losses)
        fine = [k for k in ks if np.isfinite(losses[k])
                and _within(losses[k], reference, epsilon, direction)]
        largest = 1
        for k in ks:  # contiguous from k = 1: the first k outside ends it
            if k not in fine:
                break
            largest = k
        cbs, lower = float(largest * b0), largest == ks[-1]
    probe = _nearest_probe(history, str(base["trial_id"]), step)
    row.update(cbs=cbs, cbs_lower_bound=lower, b_simple=probe,
               cbs_over_b_simple=cbs / probe if probe and np.isfinite(probe) else math.nan)
    return row


def cbs_over_training(trials: pd.DataFrame, history: pd.DataFrame, epsilon: float,
                      ema: float = 0.5, direction: str = "minimize",
                      loss_column: str = "minibatch_loss") -> pd.DataFrame:
    """One row per checkpoint fraction: the base run's step and examples there, the smoothed
    final loss of every k (``loss_k<k>``), ``cbs`` in examples per step (largest k x B0
    within ``epsilon`` of k = 1), ``cbs_lower_bound`` (every k within), ``b_simple`` (the
    base's gns_probe nearest the checkpoint) and ``cbs_over_b_simple``."""
    if not epsilon > 0 or not 0 <= ema < 1:
        raise CannotCompute(f"epsilon must be > 0 and ema in [0, 1), got {epsilon}, {ema}")
    losses = branch_losses(trials, history, ema, loss_column)
    require(trials, ["batch_size", "total_steps"], "cbs_over_training")
    rows = []
    for base_id, of_base in losses.groupby("branch_of", sort=False):
        base = trials[trials["trial_id"] == base_id]
        if base.empty:
            raise CannotCompute(f"the base trial {base_id} is not in the trials table")
        if base[["batch_size", "total_steps"]].iloc[0].isna().any():
            raise CannotCompute(f"the base trial {base_id} has no batch_size or total_steps")
        for _, group in of_base.groupby("branch_fraction", sort=True):
            rows.append(_checkpoint_row(group, base.iloc[0], history, epsilon, direction))
    return pd.DataFrame(rows).sort_values("branch_fraction", ignore_index=True)
