"""Matplotlib drawings for the report: each function draws what an analysis returned.

Nothing here computes a result. Every function takes the analysis output (DataFrames, the
``CriticalBatchSize`` / ``LRScaling`` dataclasses) and returns PNG bytes. Figures are built
with ``matplotlib.figure.Figure`` and the Agg canvas, never pyplot, so there is no global
state to leak or close and no display backend is needed. Text that came from the user (norm
names) is escaped for mathtext, and PNG metadata is left out, so the same input gives the
same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lbt_study.analysis.lr import LRScaling
from lbt_study.analysis.scaling import REGIMES, CriticalBatchSize

REGIME_COLORS = {REGIMES[0]: "#2a9d55", REGIMES[1]: "#e69f00", REGIMES[2]: "#d1495b"}
NO_REGIME_COLOR = "#888888"
DPI = 100


def label(text: object) -> str:
    """User text as a literal matplotlib label (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def num(value: float) -> str:
    """A number for a label: 4 significant digits, thousands separated."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def new_figure(ncols: int, width: float = 5.6, height: float = 4.2) -> tuple[Figure, list[Axes]]:
    """A figure of ``ncols`` side-by-side axes on the Agg canvas."""
    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without metadata (deterministic)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _log2_batch_axis(ax: Axes, batch: pd.Series) -> None:
    """A log-2 x axis labelled with the measured batch sizes."""
    ax.set_xscale("log", base=2)
    ticks = sorted({float(b) for b in batch if b > 0})
    if ticks:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("global batch size B")
    ax.grid(True, which="major", alpha=0.3)


PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def _log_axis(axis: Any) -> None:
    """Log ticks at 1, 2, 3, 5 x 10^n, written as plain numbers."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(NullFormatter())


def _log_y(ax: Axes) -> None:
    """A log y axis with plain tick labels."""
    ax.set_yscale("log")
    _log_axis(ax.yaxis)


def group_colors(keys: pd.Series) -> dict[Any, str]:
    """A fixed colour per distinct key (sorted), so a norm keeps its colour in every figure."""
    palette = [f"C{i}" for i in range(10)] + ["#17becf", "#bcbd22", "#393b79", "#8c6d31",
                                               "#843c39", "#7b4173"]
    distinct = sorted(keys.dropna().unique(), key=str)
    return {key: palette[i % len(palette)] for i, key in enumerate(distinct)}


def _grid(batch: pd.Series) -> np.ndarray:
    """Batch sizes for a smooth curve over the measured range (a bit wider)."""
    b = batch[batch > 0].astype(float)
    return np.geomspace(b.min() / 1.3, b.max() * 1.3, 200)


def _regime_points(ax: Axes, frame: pd.DataFrame, y: str) -> None:
    """Points of ``y`` with their bootstrap interval as error bars, coloured by regime."""
    for regime, color in [*REGIME_COLORS.items(), (None, NO_REGIME_COLOR)]:
        part = frame[frame["regime"].isna()] if regime is None else frame[
            frame["regime"] == regime]
        part = part[part[y] > 0]
        if part.empty:
            continue
        low = (part[y] - part[f"{y}_lower"]).clip(lower=0).fillna(0)
        high = (part[f"{y}_upper"] - part[y]).clip(lower=0).fillna(0)
        ax.errorbar(part["batch_size"], part[y], yerr=[low, high], fmt="o", ms=7,
                    color=color, capsize=3, zorder=3, label=f"regime: {regime or 'none'}")


def _critical_marks(ax: Axes, cbs: CriticalBatchSize, excess: float) -> None:
    """Vertical lines at the fitted B_crit (with its interval shaded) and Zhang's."""
    left, right = ax.get_xlim()
    if math.isfinite(cbs.b_crit_fit):
        ax.axvline(cbs.b_crit_fit, color="#3b5b92", lw=1, ls="--",
                   label=f"B_crit fit = {num(cbs.b_crit_fit)}")
        lo, hi = cbs.b_crit_fit_lower, cbs.b_crit_fit_upper
        if math.isfinite(lo) and math.isfinite(hi):
            ax.axvspan(max(lo, left), min(hi, right), color="#3b5b92", alpha=0.08,
                       label=f"{cbs.ci:.0%} interval [{num(lo)}, {num(hi)}]")
    if math.isfinite(cbs.b_crit_zhang):
        ax.axvline(cbs.b_crit_zhang, color="#7a3b92", lw=1, ls=":",
                   label=f"B_crit {excess:.0%} rule = {num(cbs.b_crit_zhang)}")
    ax.set_xlim(left, right)


def _unreached_note(ax: Axes, regimes: pd.DataFrame) -> None:
    """Say which batch sizes have no point (no trial reached the target there)."""
    missing = regimes.loc[~(regimes["steps"] > 0), "batch_size"]
    if len(missing):
        ax.text(0.01, 0.01, "no point (target not reached, or steps 0) at B = "
                + ", ".join(f"{b:g}" for b in missing), transform=ax.transAxes, fontsize=7,
                color="#555555", va="bottom")


def steps_figure(regimes: pd.DataFrame, examples: pd.DataFrame | None,
                 cbs: CriticalBatchSize, target: float, excess: float) -> bytes:
    """Steps (left) and examples (right) to target against B, log-log, with the
    perfect-scaling line through the smallest B, the line ``excess`` above it (Zhang et al.'s
    critical batch size is where the steps cross it), the McCandlish fit and the regimes."""
    fig, (ax_s, ax_e) = new_figure(2, height=4.6)
    points = cbs.points[cbs.points["steps"] > 0]
    grid = _grid(points["batch_size"])
    base = float(points["steps"].iloc[0] * points["batch_size"].iloc[0])
    fitted = math.isfinite(cbs.s_min) and math.isfinite(cbs.b_crit_fit)
    ax_s.plot(grid, base / grid, color="#555555", lw=1, label="perfect scaling (steps x B const.)")
    ax_s.plot(grid, (1 + excess) * base / grid, color="#aaaaaa", lw=1, ls=":",
              label=f"{excess:.0%} above perfect")
    if fitted:
        ax_s.plot(grid, cbs.s_min * (1 + cbs.b_crit_fit / grid), color="#3b5b92", lw=1.5,
                  label=f"McCandlish fit, S_min = {num(cbs.s_min)}")
    _regime_points(ax_s, regimes, "steps")
    _log2_batch_axis(ax_s, points["batch_size"])
    _log_y(ax_s)
    _critical_marks(ax_s, cbs, excess)
    ax_s.set_ylabel("steps to target (best trial)")
    ax_s.set_title(f"Steps to target {target:g}")
    ax_s.legend(fontsize=7, loc="upper right")
    _unreached_note(ax_s, regimes)
    ax_e.plot(grid, np.full_like(grid, base), color="#555555", lw=1,
              label="perfect scaling (examples const.)")
    if fitted:
        ax_e.plot(grid, cbs.s_min * (1 + cbs.b_crit_fit / grid) * grid, color="#3b5b92",
                  lw=1.5, label=f"McCandlish fit, E_min = {num(cbs.e_min)}")
    if examples is not None and not examples.empty:
        _regime_points(ax_e, examples.merge(regimes[["batch_size", "regime"]],
                                            on="batch_size", how="left"), "examples")
    _log2_batch_axis(ax_e, points["batch_size"])
    _log_y(ax_e)
    ax_e.set_ylabel("examples to target (best trial)")
    ax_e.set_title(f"Examples to target {target:g}")
    ax_e.legend(fontsize=7, loc="upper left")
    return to_png(fig)


def gns_figure(curves: pd.DataFrame) -> bytes:
    """gns_simple against examples seen, one line per best trial (labelled by its B)."""
    fig, (ax,) = new_figure(1, width=7.5)
    for batch, part in curves.groupby("batch_size", sort=True):
        ax.plot(part["examples_seen"], part["gns_simple"], marker=".", lw=1.2,
                label=f"B = {batch:g} (trial {label(part['trial_id'].iloc[0])})")
    ax.set_xlabel("examples seen")
    ax.set_ylabel("gradient noise scale B_simple (examples)")
    positive = curves["gns_simple"] > 0
    if positive.all():
        _log_y(ax)
    ax.grid(True, alpha=0.3)
    ax.set_title("Gradient noise scale B_simple over training")
    ax.legend(fontsize=7, loc="best")
    return to_png(fig)


def _fit_lines(ax: Axes, grid: np.ndarray, fit: pd.Series, rules: dict[str, float],
               start: tuple[float, float], ci: float) -> None:
    """The fitted power law (k and its interval in the label) and the reference rules
    through ``start`` (a batch size and its value)."""
    if math.isfinite(fit["exponent"]):
        interval = ""
        if not math.isnan(fit["exponent_lower"]):  # -inf / inf: unbounded
            interval = f" [{fit['exponent_lower']:.2f}, {fit['exponent_upper']:.2f}] ({ci:.0%})"
        how = ("free-curvature fit" if fit.get("method") == "free_curvature_profile"
               else "fit")
        ax.plot(grid, fit["coefficient"] * grid ** fit["exponent"], color="#3b5b92", lw=1.5,
                label=f"{how}: k = {fit['exponent']:.2f}{interval}")
    b0, v0 = start
    for (name, k), style in zip(rules.items(), ("--", ":", "-."), strict=False):
        ax.plot(grid, v0 * (grid / b0) ** k, color="#777777", lw=1, ls=style, label=name)


def _power_panel(ax: Axes, points: pd.DataFrame, fit: pd.Series, column: str,
                 rules: dict[str, float], ci: float) -> None:
    """Best value per B, the fitted power law, and reference rules through the smallest B."""
    shown = points[(points[column] > 0) & (points["batch_size"] > 0)].sort_values("batch_size")
    ax.plot(shown["batch_size"], shown[column], "o", color="#222222", ms=7, zorder=3,
            label=f"best trial's {column}")
    start = (float(shown["batch_size"].iloc[0]), float(shown[column].iloc[0]))
    _fit_lines(ax, _grid(shown["batch_size"]), fit, rules, start, ci)
    _log2_batch_axis(ax, shown["batch_size"])
    _log_y(ax)
    ax.set_ylabel(column)
    ax.legend(fontsize=7, loc="best")


def _lr_panel(ax: Axes, points: pd.DataFrame, fit: pd.Series, lr_col: str,
              rules: dict[str, float], ci: float) -> None:
    """The tuned lr per B with its interval (bars clipped to a decade beyond the lrs tried;
    hollow where it fell back to the best trial), the best trial's lr, the fit, the rules."""
    points = points[points["batch_size"] > 0].sort_values("batch_size")
    ax.plot(points["batch_size"], points[lr_col], "x", color="#888888", ms=6,
            label=f"best trial's {lr_col}")
    vertex = points[points["method"] == "vertex"]
    if not vertex.empty:
        floor, ceiling = points["lr_min"].min() / 10, points["lr_max"].max() * 10
        lower = vertex["lr_opt_lower"].where(np.isfinite(vertex["lr_opt_lower"]), floor)
        upper = vertex["lr_opt_upper"].where(np.isfinite(vertex["lr_opt_upper"]), ceiling)
        bars = [vertex["lr_opt"] - lower.clip(lower=floor), upper.clip(upper=ceiling)
                - vertex["lr_opt"]]
        ax.errorbar(vertex["batch_size"], vertex["lr_opt"], yerr=bars, fmt="o", ms=7,
                    color="#222222", capsize=3, zorder=3,
                    label=f"lr_opt: vertex of the fit ({ci:.0%} interval; unbounded: "
                    "10x past the lrs tried)")
    edge = points[points["method"] == "best_trial"]
    if not edge.empty:
        ax.plot(edge["batch_size"], edge["lr_opt"], "o", mfc="none", mec="#d1495b", ms=9,
                mew=1.5, zorder=3, label="edge: optimum outside the lrs tried")
    anchor = points[points["lr_opt"] > 0]
    anchor = points.assign(lr_opt=points[lr_col]) if anchor.empty else anchor
    start = (float(anchor["batch_size"].iloc[0]), float(anchor["lr_opt"].iloc[0]))
    _fit_lines(ax, _grid(points["batch_size"]), fit, rules, start, ci)
    _log2_batch_axis(ax, points["batch_size"])
    _log_y(ax)
    ax.set_ylabel(lr_col)
    ax.legend(fontsize=7, loc="best")


def lr_figure(lr: LRScaling, lr_col: str, warmup_col: str | None) -> bytes:
    """The tuned learning rate (and the best trial's warmup, when its fit has points)
    against B."""
    fits = lr.fits.set_index("parameter")
    warm = warmup_col is not None and warmup_col in fits.index and (
        fits.loc[warmup_col, "n_points"] > 0)
    fig, axes = new_figure(2 if warm else 1)
    rules = {"linear rule k = 1 (Goyal et al.)": 1.0, "square-root rule k = 0.5 (Hoffer et al.)":
             0.5}
    _lr_panel(axes[0], lr.points, fits.loc[lr_col], lr_col, rules, lr.ci)
    axes[0].set_title("Tuned learning rate per batch size")
    if warm:
        _power_panel(axes[1], lr.points, fits.loc[warmup_col], warmup_col,
                     {"constant in epochs k = 0 (Goyal et al.)": 0.0}, lr.ci)
        axes[1].set_title("Warmup of the best trial per batch size")
    return to_png(fig)


def lines_by_group(ax: Axes, frame: pd.DataFrame, group: str, y: str) -> int:
    """One line per value of ``group`` (sorted) of ``y`` against batch size; lines drawn."""
    drawn = 0
    colors = group_colors(frame[group])
    for key, part in frame.groupby(group, sort=True):
        part = part[part[y].notna()].sort_values("batch_size")
        if part.empty:
            continue
        ax.plot(part["batch_size"], part[y], marker="o", lw=1.5, color=colors[key],
                label=label(key))
        drawn += 1
    return drawn


def best_figure(best_norm: pd.DataFrame, best: pd.DataFrame, target: float | None) -> bytes:
    """Final objective of the best trial per (norm, B), and the best over norms."""
    fig, (ax,) = new_figure(1, width=7.5)
    lines_by_group(ax, best_norm, "norm", "final_objective")
    shown = best[best["final_objective"].notna()]
    ax.plot(shown["batch_size"], shown["final_objective"], color="black", lw=3, alpha=0.25,
            label="best over norms")
    if target is not None:
        ax.axhline(target, color="#d1495b", lw=1, ls="--", label=f"target {target:g}")
    _log2_batch_axis(ax, best["batch_size"])
    ax.set_ylabel("final objective of the best trial")
    ax.set_title("Best trial per batch size and normalization")
    ax.legend(fontsize=7, loc="best", ncols=2)
    return to_png(fig)


GAP_TITLES = {"gap_accuracy_at_target": "accuracy gap at the target",
              "gap_loss_at_target": "loss gap at the target",
              "final_gap_accuracy": "accuracy gap at the end: train - validation",
              "final_gap_loss": "loss gap at the end: validation - train"}


def gap_figure(gaps: pd.DataFrame, columns: list[str]) -> bytes:
    """Generalization gap (median over trials) against B, a line per norm, a panel per gap."""
    fig, axes = new_figure(len(columns), width=4.4 if len(columns) > 2 else 5.6)
    for ax, column in zip(axes, columns, strict=True):
        part = gaps[gaps["gap"] == column]
        if "budget" in part.columns:  # several budgets: a line per norm and budget
            part = part.assign(norm=part["norm"].astype(str) + ", " + part["budget"])
        if lines_by_group(ax, part, "norm", "gap_median"):
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, f"no {column} values", ha="center", transform=ax.transAxes)
        ax.axhline(0, color="#999999", lw=0.8)
        _log2_batch_axis(ax, part["batch_size"])
        ax.set_ylabel(f"{column}, median over trials")
        ax.set_title(GAP_TITLES.get(column, column))
    return to_png(fig)


def throughput_figure(frame: pd.DataFrame) -> bytes:
    """Throughput against B per worker count; batch and worker scaling beside it."""
    with_workers = frame.assign(workers_label="workers = " + frame["workers"].astype(str))
    multi = frame["efficiency_workers"].notna() & (frame["workers"] != 1)
    fig, axes = new_figure(3, width=4.6) if multi.any() else new_figure(2)
    panels = [("throughput", "throughput (training examples/s)", "Throughput"),
              ("speedup_vs_smallest_batch", "throughput / throughput at the smallest B",
               "Batch scaling (same workers)"),
              ("efficiency_workers", "throughput(B, w) / (w x throughput(B, 1))",
               "Worker scaling efficiency")]
    for ax, (column, ylabel, title) in zip(axes, panels, strict=False):
        shown = with_workers if column != "efficiency_workers" else with_workers[multi]
        lines_by_group(ax, shown, "workers_label", column)
        _log2_batch_axis(ax, frame["batch_size"])
        if column == "throughput":
            _log_y(ax)
        else:
            ax.axhline(1, color="#999999", lw=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="best")
    return to_png(fig)


def pareto_figure(front: pd.DataFrame, x: str, y: str) -> bytes:
    """All competing trials, the Pareto front highlighted and joined."""
    fig, (ax,) = new_figure(1, width=7.5)
    competing = front[front["reason"].isna()]
    rest = competing[~competing["on_front"]]
    best = competing[competing["on_front"]].sort_values(x)
    ax.scatter(rest[x], rest[y], s=18, color="#9aa7b8", label="dominated trials")
    ax.step(best[x], best[y], where="post", color="#e69f00", lw=1.2)
    ax.scatter(best[x], best[y], s=40, color="#e69f00", edgecolor="black", zorder=3,
               label="Pareto front")
    if (competing[x] > 0).all():
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
    ax.set_xlabel(f"{x} (training seconds)")
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.set_title("Pareto front: final objective vs training seconds to target")
    ax.legend(fontsize=7, loc="best")
    return to_png(fig)


def steps_by_norm_figure(frontier: pd.DataFrame, critical: pd.DataFrame) -> bytes:
    """Steps to target of the fastest trial per (norm, B), a line per norm; censored batch
    sizes marked on the top edge; each norm's McCandlish fit dashed in its colour."""
    fig, (ax,) = new_figure(1, width=7.5)
    lines_by_group(ax, frontier, "norm", "steps")
    colors = group_colors(frontier["norm"])
    grid = _grid(frontier["batch_size"])
    fits = critical.set_index("norm") if "norm" in critical else pd.DataFrame()
    for norm, fit in fits.iterrows():
        if np.isfinite(fit.get("b_crit", np.nan)) and np.isfinite(fit.get("s_min", np.nan)):
            ax.plot(grid, fit["s_min"] * (1 + fit["b_crit"] / grid), ls="--", lw=1,
                    color=colors.get(norm, "#777777"))
    censored = frontier[frontier["censored"].eq(True)]
    for _, row in censored.iterrows():
        ax.annotate("censored", (row["batch_size"], 1), xycoords=("data", "axes fraction"),
                    ha="center", va="top", fontsize=7, color=colors.get(row["norm"], "#777777"))
    _log2_batch_axis(ax, frontier["batch_size"])
    _log_y(ax)
    ax.set_ylabel("steps to target, fastest trial")
    ax.set_title("Steps to target per normalization (dashed: each norm's McCandlish fit)")
    ax.legend(fontsize=7, loc="best", ncols=2)
    return to_png(fig)


def loo_figure(loo: pd.DataFrame) -> bytes:
    """Leave-one-batch-size-out relative error of the predicted steps, per batch size."""
    fig, (ax,) = new_figure(1, width=6.4)
    shown = loo.dropna(subset=["relative_error"])
    inside = shown[~shown["extrapolated"].astype(bool)]
    edge = shown[shown["extrapolated"].astype(bool)]
    ax.axhline(0, color="#999999", lw=0.8)
    ax.plot(shown["batch_size"], shown["relative_error"], color="#9aa7b8", lw=0.8)
    ax.scatter(inside["batch_size"], inside["relative_error"], color="#1f77b4",
               label="interpolated", zorder=3)
    ax.scatter(edge["batch_size"], edge["relative_error"], facecolors="none",
               edgecolors="#1f77b4", label="extrapolated (an edge)", zorder=3)
    _log2_batch_axis(ax, loo["batch_size"])
    ax.set_ylabel("predicted / measured steps - 1")
    ax.set_title("Leave one batch size out")
    ax.legend(fontsize=7, loc="best")
    return to_png(fig)
