"""The joint protocol: one search over everything, batch size included (Optuna TPE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbt_study.study.protocols.base import Cell, Protocol

if TYPE_CHECKING:
    from lbt_study.study.spec import Study


class Joint(Protocol):
    name = "joint"

    def cells(self, study: Study) -> list[Cell]:
        return [Cell(study.name, {}, study.trials)]
