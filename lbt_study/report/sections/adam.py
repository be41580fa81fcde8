"""Adam-era scaling: steps to target by beta2 rule and batch size, beta2 and tau per trial,
and the surge of the optimal learning rate (Adam-family studies only)."""

from __future__ import annotations

from lbt_study.analysis.adam import ADAM_COLUMNS
from lbt_study.analysis.summary import Analyses
from lbt_study.report.document import Item, Text
from lbt_study.report.framework import Csv, ItemsPart, SectionSpec, TablePart


def _intro(_: Analyses) -> str:
    return ("For Adam-family trials (adamw, lamb): per beta2_rule and batch size the fastest "
            "trial to the target (steps, steps_upper: its resampling interval's upper end), "
            "the adam_beta2 it ran with (fixed: beta2 per step; half_life: beta2 ** (B / "
            "beta2_ref_batch_size), the second moment's half-life kept in examples, Marek et "
            "al. 2025) and adamw_tau_epochs = B / (lr x weight_decay x training-set size), "
            "AdamW's timescale in epochs (Bergsma et al. 2025).")


def _words(a: Analyses) -> list[Item]:
    adam = a.results.adam.value
    items: list[Item] = []
    for row in adam.comparison.itertuples():
        verdict = (f"{row.faster} is faster beyond the other's resampling interval"
                   if isinstance(row.faster, str)
                   else "neither rule is faster beyond the other's interval")
        same = (" (both rules run the same beta2 here: a difference is the learning rates "
                "searched, not the rule)" if row.same_beta2 else "")
        items.append(Text(f"B = {row.batch_size:g}: {row.steps_fixed:.4g} steps with beta2 "
                          f"fixed, {row.steps_half_life:.4g} with the half-life rule; "
                          f"{verdict}{same}."))
    lr = a.results.lr
    surge = adam.surge or ("no fall of the optimal learning rate past a batch size (Li et al. "
                           "2024's surge) is seen" if not lr.reason else None)
    if surge:
        items.append(Text(surge[0].upper() + surge[1:] + "."))
    return items


SECTION = SectionSpec(
    "Adam-era scaling", ("adam",), _intro,
    (ItemsPart(_words),
     TablePart(lambda a: a.results.adam.value.table, ADAM_COLUMNS,
               "The fastest trial per beta2 rule and batch size", "adam")),
    (Csv("adam", "adam", lambda a: a.results.adam.value.table),),
    shown=lambda a: not a.results.adam.reason)
