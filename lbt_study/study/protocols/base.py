"""The protocol contract: how a study lays out its trials.

A protocol (in the manner of AlgoPerf's submission API: a few functions a driver calls) says

- ``check(study)``: what the protocol needs of a ``Study`` (raises ``ValueError`` with the
  rule and the values; the Study's own validation calls it);
- ``cells(study)``: the searches the study runs, in order, each a ``Cell`` (its Optuna
  study name, the values the protocol fixes for it, its number of trials);
- ``plan(study, cell, run_dir, records)``: the study and cell the driver runs for ``cell``
  once the cells before it have finished (``records``: the trials table so far), or None
  when the cell has nothing to run (``skipped`` then says why in one line);
- ``preflight(study, target)``: checks that need the workload's target (``UserError``);
- ``shape(study)``: the study in one line for the driver's first words;
- ``columns(config)``: trials-table columns it adds for a trial, from the trial's Tune
  config (the branched protocol's branch_of, branch_fraction, branch_k);
- ``resume_refusal(study)``: why ``lbt-study resume`` cannot continue it, or None;
- ``runner``: None to run the cells with ``lbt_study.study.driver.run_study`` (and resume
  by settling the dead driver's trials, ``lbt_study.study.resume``), or the
  ``"module:function"`` of its own loop (the adaptive protocol's rounds) taking
  ``(study, run_dir, direction, fresh=..., **run_study's options)``;
- ``sampler``: the default Optuna sampler of its searches; ``uses``: the Study fields
  that belong to it (another protocol's study may not set them); ``independent_cells``:
  False when ``plan`` needs the cells before it to have run (the driver otherwise runs all
  the cells' trials in one Tune run).

A new protocol is one module here and one line in ``PROTOCOLS`` (``protocols/__init__.py``).
Protocol modules import no other part of the driver (the Study only for type hints), so
``lbt_study.study.spec`` can validate a study's protocol against the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lbt_study.errors import UserError

if TYPE_CHECKING:
    from lbt_study.study.spec import Study


@dataclass(frozen=True)
class Cell:
    """One search of a study: its Optuna study name, the values the protocol fixes for it
    (batch size, norm, budget), and its number of trials."""

    study_name: str
    overrides: dict[str, Any]
    trials: int

    def apply(self, suggested: dict[str, Any]) -> dict[str, Any]:
        """The space's values with the protocol's; the space may not set those itself."""
        taken = sorted(set(self.overrides) & set(suggested))
        if taken:
            raise UserError(f"the protocol sets {taken} for this search ({self.study_name}); "
                            "the space may not")
        return {**suggested, **self.overrides}


class Protocol:
    """The defaults every protocol shares; subclasses override what differs."""

    name: ClassVar[str]
    sampler: ClassVar[str] = "tpe"
    uses: ClassVar[frozenset[str]] = frozenset()
    runner: ClassVar[str | None] = None
    independent_cells: ClassVar[bool] = True
    """Whether every cell can be planned before any runs (the driver then runs them all in
    one Tune run); False when ``plan`` reads the trials of the cells before."""

    def check(self, study: Study) -> None:
        """Raise ``ValueError`` when ``study`` does not fit the protocol."""

    def cells(self, study: Study) -> list[Cell]:
        raise NotImplementedError

    def plan(self, study: Study, cell: Cell, run_dir: Path,
             records: list[dict[str, Any]]) -> tuple[Study, Cell] | None:
        return study, cell

    def skipped(self, study: Study, records: list[dict[str, Any]]) -> str:
        return f"study {study.name!r}: a search had nothing to run"

    def preflight(self, study: Study, target: float | None) -> None:
        """Checks that need the target, as ``UserError``."""

    def shape(self, study: Study) -> str:
        cells = self.cells(study)
        total = sum(c.trials for c in cells)
        return f"{total} trials" if len(cells) == 1 else \
            f"{len(cells)} searches x {study.trials} trials = {total} trials"

    def columns(self, config: dict[str, Any]) -> dict[str, Any]:
        return {}

    def resume_refusal(self, study: Study) -> str | None:
        return None
