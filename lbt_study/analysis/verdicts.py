"""Which of the literature's rules held on this workload: one row per claim, with what was
measured, its interval and a verdict (held / did not hold / not enough evidence / not tested).

A rule about an exponent (the linear and square-root learning-rate rules, warmup constant in
epochs) held when the fitted exponent's interval contains the rule's value and not all three
rules at once (then: not enough evidence), and did not hold when it excludes it. A claim about
a difference or a slope held when its interval lies on the claimed side of zero, did not hold
when it lies on the other, and is not enough evidence when it contains zero. A claim the study
cannot test says which study would test it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from lbt_study.analysis.lr import RULES, LRScaling
from lbt_study.train.names import ADAM_FAMILY

VERDICT_COLUMNS = ("claim", "source", "measured", "value", "lower", "upper", "verdict", "why")
HELD, NOT_HELD, UNSURE, UNTESTED = ("held", "did not hold", "not enough evidence",
                                    "not tested")
RULE_ROWS = (("linear_rule_in_ci", "the optimal learning rate grows linearly with B (SGD)",
              "Goyal et al. 2017", False),
             ("sqrt_rule_in_ci", "the optimal learning rate grows as sqrt(B) (SGD)",
              "Hoffer et al. 2017", False),
             ("sqrt_rule_in_ci", "the optimal learning rate grows as sqrt(B) (Adam)",
              "Malladi et al. 2022", True))
"""(rule, claim, source, whether it is a claim about Adam-family optimizers)."""
ALL_RULES = ("constant_in_ci", "linear_rule_in_ci", "sqrt_rule_in_ci")


def _row(claim: str, source: str, measured: str, value: float = math.nan,
         lower: float = math.nan, upper: float = math.nan, verdict: str = UNTESTED,
         why: str = "") -> dict:
    return dict(zip(VERDICT_COLUMNS, (claim, source, measured, value, lower, upper, verdict,
                                      why), strict=True))


def exponent_verdict(fit: pd.Series, rule: str) -> tuple[str, str]:
    """The verdict on ``rule`` (a ``*_in_ci`` column) of one exponent fit, and why."""
    lower, upper = fit["exponent_lower"], fit["exponent_upper"]
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return UNSURE, "the exponent's interval is unbounded"
    if all(bool(fit[r]) for r in ALL_RULES):
        return UNSURE, "the interval holds k = 0, 0.5 and 1: the study does not determine k"
    if bool(fit[rule]):
        return HELD, f"k = {RULES[rule]:g} lies in the interval"
    return NOT_HELD, f"k = {RULES[rule]:g} lies outside the interval"


def sign_verdict(lower: float, upper: float, positive: bool) -> str:
    """Held when the interval lies on the claimed side of zero (``positive``: above)."""
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return UNSURE
    if (lower > 0) if positive else (upper < 0):
        return HELD
    if (upper < 0) if positive else (lower > 0):
        return NOT_HELD
    return UNSURE


def lr_rows(lr: LRScaling | None, lr_reason: str | None, optimizer: str | None) -> list[dict]:
    """The learning-rate rules (SGD: linear, square root; Adam: square root) and warmup."""
    fits = None if lr is None else lr.fits
    adam = optimizer in ADAM_FAMILY
    rows = []
    for rule, claim, source, about_adam in RULE_ROWS:
        if about_adam != adam:
            other = "SGD" if adam else "Adam or AdamW"
            rows.append(_row(claim, source, "the exponent k of lr_opt ~ B^k", why=(
                f"the study used {optimizer}; a study with {other} would test it")))
            continue
        rows.append(_fit_row(fits, "learning_rate", rule, claim, source, lr_reason))
    rows.append(_fit_row(fits, "warmup_epochs", "constant_in_ci", "warmup is constant in "
                         "epochs", "Goyal et al. 2017", lr_reason))
    return rows


def _fit_row(fits: pd.DataFrame | None, parameter: str, rule: str, claim: str, source: str,
             reason: str | None) -> dict:
    measured = f"the exponent k of the best {parameter} ~ B^k"
    if fits is None or parameter not in set(fits["parameter"]):
        return _row(claim, source, measured, why=reason or f"no {parameter} fit")
    fit = fits[fits["parameter"] == parameter].iloc[0]
    if not np.isfinite(fit["exponent"]):
        return _row(claim, source, measured, why=str(fit.get("reason") or "no estimate"))
    verdict, why = exponent_verdict(fit, rule)
    return _row(claim, source, measured, fit["exponent"], fit["exponent_lower"],
                fit["exponent_upper"], verdict, why)


def gns_row(gns_ratio: pd.DataFrame | None, reason: str | None) -> dict:
    """B_simple predicts B_crit (McCandlish et al. 2018): the ratio at the crossing holds 1."""
    claim, source = "the noise scale B_simple predicts B_crit", "McCandlish et al. 2018"
    measured = "B_simple / B_crit, B_simple read at each frontier trial's crossing"
    if gns_ratio is None or "at_crossing" not in set(gns_ratio["measure"]):
        return _row(claim, source, measured, why=reason or "no noise-scale measurement")
    r = gns_ratio[gns_ratio["measure"] == "at_crossing"].iloc[0]
    lower, upper = r["ratio_lower"], r["ratio_upper"]
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return _row(claim, source, measured, r["ratio"], lower, upper, UNSURE,
                    "the ratio's interval is unbounded")
    held = lower <= 1 <= upper
    return _row(claim, source, measured, r["ratio"], lower, upper, HELD if held else NOT_HELD,
                "the interval holds 1" if held else "the interval excludes 1")


def bootstrap_interval(groups: list[np.ndarray], stat: Callable[[list[np.ndarray]], float],
                       n_boot: int, seed: int, ci: float) -> tuple[float, float, float]:
    """``stat`` of ``groups`` and its percentile interval, each group resampled on its own."""
    rng = np.random.default_rng(seed)
    draws = [stat([g[rng.integers(0, len(g), len(g))] for g in groups]) for _ in range(n_boot)]
    half = (1 - ci) / 2 * 100
    lo, hi = np.nanpercentile(draws, [half, 100 - half])
    return stat(groups), float(lo), float(hi)


def _gap_column(trials: pd.DataFrame) -> str | None:
    for column in ("gap_accuracy_at_target", "final_gap_accuracy"):
        if column in trials.columns and trials[column].notna().any():
            return column
    return None


def ghost_row(trials: pd.DataFrame, n_boot: int, seed: int, ci: float) -> dict:
    """Ghost BN closes the large-batch gap (Hoffer et al. 2017): at the larger half of the
    batch sizes, the mean over B of median gap (Ghost BN) - median gap (BatchNorm) < 0."""
    claim, source = "Ghost BN closes the large-batch generalization gap", "Hoffer et al. 2017"
    gap = _gap_column(trials)
    measured = (f"mean over the larger half of the batch sizes of median {gap} (ghost_batch) "
                "- median (batch)")
    norms = set(trials["norm"]) if "norm" in trials.columns else set()
    if gap is None or not {"batch", "ghost_batch"} <= norms:
        return _row(claim, source, "the gap by normalization", why=(
            "a study with both norm 'batch' and 'ghost_batch' at several batch sizes would "
            "test it" if gap is not None else "no generalization gap measured"))
    pool = trials[trials["norm"].isin(["batch", "ghost_batch"]) & trials[gap].notna()]
    sizes = sorted(pool["batch_size"].unique())
    large = sizes[len(sizes) // 2:]
    groups, keys = [], []
    for b in large:
        for norm in ("ghost_batch", "batch"):
            values = pool.loc[(pool["batch_size"] == b) & (pool["norm"] == norm), gap]
            if values.empty:
                return _row(claim, source, measured, why=f"no {norm} trial at B = {b:g}")
            groups.append(values.to_numpy(float))
            keys.append(norm)

    def stat(gs: list[np.ndarray]) -> float:
        return float(np.mean([np.median(gs[i]) - np.median(gs[i + 1])
                              for i in range(0, len(gs), 2)]))

    value, lower, upper = bootstrap_interval(groups, stat, n_boot, seed, ci)
    verdict = sign_verdict(lower, upper, positive=False)
    why = (f"B = {', '.join(f'{b:g}' for b in large)}; trials resampled within each "
           "(norm, B)" + ("; the interval holds 0" if verdict == UNSURE else ""))
    return _row(claim, source, measured, value, lower, upper, verdict, why)


def hybrid_row(trials: pd.DataFrame, n_boot: int, seed: int, ci: float) -> dict:
    """The hybrid norm's alpha (1: batch statistics, 0: layer) grows with B: the slope of
    alpha against ln B is > 0."""
    claim, source = ("the hybrid norm's alpha moves toward batch statistics at large B",
                     "seed 003")
    measured = "slope of the final hybrid_alpha against ln B (OLS over trials)"
    if "hybrid_alpha" not in trials.columns:
        return _row(claim, source, measured, why="no hybrid_alpha measured")
    pool = trials[trials["hybrid_alpha"].notna()]
    if pool["batch_size"].nunique() < 3:
        return _row(claim, source, measured, why="a study with norm 'hybrid' at 3 or more "
                    "batch sizes would test it")
    data = np.column_stack([np.log(pool["batch_size"].to_numpy(float)),
                            pool["hybrid_alpha"].to_numpy(float)])

    def slope(gs: list[np.ndarray]) -> float:
        x, y = gs[0][:, 0], gs[0][:, 1]
        return float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else math.nan

    value, lower, upper = bootstrap_interval([data], slope, n_boot, seed, ci)
    return _row(claim, source, measured, value, lower, upper,
                sign_verdict(lower, upper, positive=True), "trials resampled")


UNTESTED_HERE = (
    ("training longer closes the large-batch gap", "Hoffer et al. 2017",
     "the gap at the largest batch sizes against the budget",
     "a study with Study(budgets=[...]) would test it; its gap-by-budget section shows the gap "
     "per budget (no verdict computed yet)"),
    ("BatchNorm needs >= 32 examples per norm batch", "seed 001",
     "the objective against norm_batch_size at a fixed batch size",
     "a study varying ghost_batch_size at a fixed batch size would test it (no verdict "
     "computed yet)"),
)


def verdicts(trials: pd.DataFrame, lr: LRScaling | None, lr_reason: str | None,
             gns_ratio: pd.DataFrame | None, gns_reason: str | None, n_boot: int = 1000,
             seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """The verdicts table (``VERDICT_COLUMNS``), one row per claim."""
    optimizer = (str(trials["optimizer"].mode().iloc[0]) if "optimizer" in trials.columns
                 and trials["optimizer"].notna().any() else None)
    rows = lr_rows(lr, lr_reason, optimizer)
    warmups = trials["warmup_epochs"].dropna().unique() if "warmup_epochs" in trials else []
    if len(warmups) < 2:
        values = ", ".join(f"{w:g}" for w in warmups) or "none"
        rows[-1]["why"] = (f"warmup_epochs was not varied ({values}); a study searching it "
                           "at several batch sizes would test it")
    rows += [gns_row(gns_ratio, gns_reason),
            ghost_row(trials, n_boot, seed, ci), hybrid_row(trials, n_boot, seed, ci),
            *(_row(c, s, m, why=w) for c, s, m, w in UNTESTED_HERE)]
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
