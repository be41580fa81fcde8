"""The report's section on a branched study (Merrill et al. 2025, ``protocol="branched"``):
the critical batch size at each checkpoint of the base run, beside the base run's gradient
noise scale there. It renders result ``branched`` of ``analyze``
(``lbt_study.analysis.branched.cbs_over_training``) and computes nothing."""

from __future__ import annotations

import pandas as pd

from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.framework import Csv, FigurePart, SectionSpec, TablePart


def _settings(a: Analyses) -> dict:
    return a.study.meta.get("branched") or {}


def _intro(a: Analyses) -> str:
    s = _settings(a)
    return (f"Branched critical batch size (Merrill et al. 2025): from the base run at B0 = "
            f"{s.get('base_batch_size')}, branches at k x B0 for k in {s.get('ks')} started at "
            f"fractions {s.get('fractions')} of its budget, with the base's learning rate at "
            f"the checkpoint scaled by the {s.get('lr_rule')!r} rule, constant, for "
            f"{s.get('branch_examples')} examples each. A branch's loss is its mean minibatch "
            f"loss per evaluation ({s.get('branch_evals')} evaluations, equally many examples "
            f"apart at every k), smoothed by a bias-corrected EMA of factor {s.get('ema')}, at "
            "its end. cbs: the largest k x B0 with every branch up to it within epsilon = "
            f"{s.get('epsilon')} of the k = 1 branch (relative); cbs_lower_bound: every k was "
            "within, so the CBS is at least this. b_simple: the base run's gns_probe "
            "(B_simple = tr(S)/|G|^2) at the evaluation nearest the checkpoint.")


def _figure(table: pd.DataFrame) -> bytes:
    fig, (ax,) = figures.new_figure(1)
    x = table["branch_fraction"]
    ax.plot(x, table["cbs"], "o-", label="branched CBS")
    bound = table[table["cbs_lower_bound"].astype(bool)]
    if len(bound):
        ax.plot(bound["branch_fraction"], bound["cbs"], "^", color="C0", markersize=10,
                label="lower bound (every k within epsilon)")
    if table["b_simple"].notna().any():
        ax.plot(x, table["b_simple"].where(table["b_simple"] > 0), "s--", color="C1",
                label="B_simple of the base run")
    ax.set_yscale("log")
    ax.set(xlabel="fraction of the base run's budget", ylabel="batch size (examples)",
           title="Critical batch size over training")
    ax.legend(fontsize=8)
    return figures.to_png(fig)


def _drawable(a: Analyses) -> bool:
    return bool(a.results.branched.value["cbs"].notna().any())


SECTION = SectionSpec(
    "Branched critical batch size over training", ("branched",), _intro,
    (TablePart(lambda a: a.results.branched.value, caption="One row per checkpoint of the base "
               "run: its step and examples seen, every k's smoothed final loss, the CBS and "
               "B_simple.", csv="cbs_over_training"),
     FigurePart("cbs_over_training", lambda a: _figure(a.results.branched.value),
                lambda _: "Branched CBS and the base run's B_simple against the fraction of "
                "its budget, log y.", _drawable, lambda _: "no checkpoint has a CBS")),
    (Csv("cbs_over_training", "branched"),), shown=lambda a: is_branched(a))


def is_branched(a: Analyses) -> bool:
    """The section appears only in a branched study's report."""
    return a.study.meta.get("protocol") == "branched"
