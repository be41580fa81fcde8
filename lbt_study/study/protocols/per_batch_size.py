"""The per-batch-size protocol (Shallue et al. 2018): every batch size in ``batch_sizes``
(and every norm in ``norms``, and every budget in ``budgets``, if given) gets ``trials``
trials of its own search over the rest, quasi-random by default (Optuna's QMC sampler: the
same points in every cell), each its own Optuna study ``NAME/B=..[/norm=..][/budget=..]``,
so every frontier point is tuned alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lbt_study.study.protocols.base import Cell, Protocol

if TYPE_CHECKING:
    from lbt_study.study.spec import Study


class PerBatchSize(Protocol):
    name = "per_batch_size"
    sampler = "qmc"
    uses = frozenset({"batch_sizes", "norms", "budgets"})

    def check(self, study: Study) -> None:
        if not study.batch_sizes:
            raise ValueError(f"protocol {self.name!r} needs batch_sizes, e.g. [32, 128]")
        taken = sorted({"batch_size", *(["norm"] if study.norms else [])} & set(study.fixed))
        if taken:
            raise ValueError(f"protocol {self.name!r} sets {taken} itself; "
                             "remove them from fixed")

    def cells(self, study: Study) -> list[Cell]:
        norms: list[str | None] = list(study.norms) or [None]
        budgets: list[dict[str, Any]] = list(study.budgets) or [{}]
        return [
            Cell(f"{study.name}/B={b}" + (f"/norm={n}" if n else "")
                 + (f"/budget={u['budget']}" if u else ""),
                 {"batch_size": b, **({"norm": n} if n else {}), **u}, study.trials)
            for b in study.batch_sizes for n in norms for u in budgets
        ]
