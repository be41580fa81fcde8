"""Generalization gap against batch size, by normalization (and budget), with the budgets'
comparison and the distance the weights travel."""

from __future__ import annotations

from lbt_study.analysis.summary import GAP_COLUMNS, Analyses
from lbt_study.report import figures
from lbt_study.report.document import Item, Table, display, fmt
from lbt_study.report.framework import Csv, FigurePart, ItemsPart, SectionSpec, TablePart
from lbt_study.report.words import has_values, none_because, ok, pivot_by_norm


def _intro(a: Analyses) -> str:
    return ("The generalization gap (Keskar et al. 2017; Hoffer et al. 2017): train - "
            "validation accuracy and validation - train loss. gap_*_at_target is taken where "
            "the trial crossed the target (interpolated like the steps), so every trial is "
            "compared at the same validation quality; final_gap_* at its last evaluation. "
            f"Each table gives the median over the {ok(a)} trials of a normalization and "
            "batch size (n_trials in gap_by_norm.csv): the primary measure, since the best "
            "trial by validation is chosen on the same validation set, which biases its gap "
            "low (gap_of_best in the CSV)." + _budget_words(a))


def _budget_words(a: Analyses) -> str:
    if a.results.gap_by_budget.value is None:
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
    frame, best = a.results.gap_by_budget.value, a.results.best_by_budget.value
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


def _columns(a: Analyses) -> list[str]:
    """The gaps measured: final_gap_accuracy, final_gap_loss, or both."""
    return [c for c in GAP_COLUMNS if a.results.gap.value["gap"].eq(c).any()]


def _tables(a: Analyses) -> list[Item]:
    """One table per gap: norms as rows, batch sizes as columns."""
    gap = a.results.gap.value
    within = ["budget"] if "budget" in gap.columns else []
    return [Table(display(pivot_by_norm(gap[gap["gap"] == column], "gap_median", within)),
                  f"{column}, median over trials", "gap_by_norm") for column in _columns(a)]


DIFFUSION_CAPTION = (
    "Distance from initialisation (Hoffer et al. 2017): ||w - w_0|| = a + b ln(step) fitted to "
    "each trial's evaluations (step >= 1); per batch size the median, smallest and largest "
    "slope b, the median R^2 and the median final distance. Their random-walk model predicts "
    "a line in log steps, and a larger batch ending nearer its start on an epoch budget.")


def _diffusion(a: Analyses) -> bool:
    return len(a.results.diffusion.value) > 0


SECTION = SectionSpec(
    "Generalization gap against batch size, by normalization", ("gap",), _intro,
    (ItemsPart(_tables),
     FigurePart("gap_by_norm", lambda a: figures.gap_figure(a.results.gap.value, _columns(a)),
                lambda _: "Generalization gap against batch size, the median over trials, "
                "one line per normalization (and budget, when the study ran several).",
                has_values("gap", "gap_median"),
                none_because("no trial has a gap value", "gap", "norm")),
     ItemsPart(_budget_comparison),
     TablePart(lambda a: a.results.diffusion.value, caption=DIFFUSION_CAPTION, csv="diffusion",
               needs="diffusion", when=_diffusion)),
    (Csv("gap_by_norm", "gap"), Csv("gap_by_budget", "gap_by_budget"),
     Csv("diffusion", "diffusion", when=_diffusion)))
