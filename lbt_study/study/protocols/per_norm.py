"""The per-normalization protocol: every normalization in ``norms`` gets ``trials`` trials of
its own search over everything else, batch size included (Optuna TPE by default), each its
own Optuna study ``NAME/norm=..``, so the normalizations are compared tuned alike. The joint
protocol searches the norm with the rest and may give a norm one trial."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbt_study.study.protocols.base import Cell, Protocol

if TYPE_CHECKING:
    from lbt_study.study.spec import Study


class PerNorm(Protocol):
    name = "per_norm"
    uses = frozenset({"norms"})

    def check(self, study: Study) -> None:
        if len(study.norms) < 2:
            raise ValueError(f"protocol {self.name!r} compares normalizations: it needs norms "
                             f"with at least 2, got {list(study.norms)}")
        if "norm" in study.fixed:
            raise ValueError(f"protocol {self.name!r} sets 'norm' itself; remove it from fixed")

    def cells(self, study: Study) -> list[Cell]:
        return [Cell(f"{study.name}/norm={n}", {"norm": n}, study.trials) for n in study.norms]
