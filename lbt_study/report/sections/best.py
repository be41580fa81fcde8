"""Best trial per batch size: the trial each batch size is judged by, per normalization too."""

from __future__ import annotations

from lbt_study.analysis.summary import Analyses
from lbt_study.report import figures
from lbt_study.report.framework import Csv, FigurePart, SectionSpec, TablePart
from lbt_study.report.words import better, has_values, none_because, ok, pivot_by_norm

BEST_COLUMNS = ("batch_size", "trial_id", "norm", "workers", "learning_rate", "warmup_epochs",
                "final_objective", "best_objective", "final_gap_accuracy", "steps_to_target",
                "final_gns_simple", "n_candidates", "reason")


def _intro(a: Analyses) -> str:
    return (f"For each batch size, the trial with the {better(a)} final_objective among trials "
            f"with status {ok(a)} (other hyperparameters tuned separately per batch size, as in "
            "Shallue et al. 2018). n_candidates: trials that competed.")


def _figure(a: Analyses) -> bytes:
    r = a.results
    return figures.best_figure(r.best_norm.value, r.best.value, a.study.target)


SECTION = SectionSpec(
    "Best trial per batch size", ("best",), _intro,
    (TablePart(lambda a: a.results.best.value, BEST_COLUMNS, csv="best_per_batch_size"),
     TablePart(lambda a: pivot_by_norm(a.results.best_norm.value, "final_objective"),
               caption="final_objective of the best trial per normalization (rows) and batch "
               "size (columns)", csv="best_per_norm_and_batch_size", needs="best_norm"),
     FigurePart("best", _figure,
                lambda _: "Final objective of the best trial per batch size, one line per "
                "normalization; the grey band joins the best over all normalizations.",
                has_values("best", "final_objective"),
                none_because("no batch size has a best trial", "best"), needs="best_norm")),
    (Csv("best_per_batch_size", "best"), Csv("best_per_norm_and_batch_size", "best_norm")))
