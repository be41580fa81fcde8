"""Optuna through Ray Tune: the search of one protocol cell, recording outcomes faithfully."""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from lbt_study.records.results import (  # noqa: E402
    reported_rows,
)
from lbt_study.study.outcomes import optuna_outcome  # noqa: E402
from lbt_study.study.spec import (  # noqa: E402
    CONFIG_KEY,
    Cell,
    Study,
    suggest,
)
from lbt_study.study.storage import open_storage, resolve  # noqa: E402


class SpaceOf:
    """A cell's space as OptunaSearch calls it; a class, since OptunaSearch pickles it."""

    def __init__(self, study: Study, cell: Cell) -> None:
        self.study, self.cell = study, cell

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {CONFIG_KEY: self.cell.apply(suggest(self.study, trial))}


class StudySearch(OptunaSearch):
    """OptunaSearch that records outcomes faithfully.

    Before Optuna is told anything, ``recorder(trial_id, error)`` writes the trial's row to
    the tables and returns it, so a trial Optuna knows as finished is always in the tables
    (resume relies on it), and Optuna is told what the table says: COMPLETE with the final
    objective (and seconds to target, multi-objective: never reached = infinitely slow),
    PRUNED when stopped early, FAIL for diverged / out-of-memory / failed trials (so the
    sampler moves away), never COMPLETE with a made-up value. Intermediate values (each
    evaluation's objective at its examples seen, not at Tune iterations) are written only
    when ``intermediate_values`` is set: nothing here prunes on them, and each is a SQLite
    write on the driver.
    """

    recorder: Callable[[str, bool], dict[str, Any]]
    intermediate_values: bool = False

    def optuna_number(self, trial_id: str) -> int | None:
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint, without the user's space function and the recorder
        (which need not pickle); lbt-study resumes from the Optuna database, not this file."""
        space, self._space = self._space, None
        recorder = self.__dict__.pop("recorder", None)
        try:
            super().save(checkpoint_path)
        finally:
            self._space = space
            if recorder is not None:
                self.recorder = recorder

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self.intermediate_values or isinstance(self.metric, list):
            return  # Optuna takes no intermediate values for several objectives
        for row in reported_rows(result):
            value = row.get(self.metric)
            if isinstance(value, float) and math.isfinite(value) and "examples_seen" in row:
                self._ot_trials[trial_id].report(value, int(row["examples_seen"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        rec = self.recorder(trial_id, error)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("status", rec["status"])
        ot_trial.set_user_attr("tune_trial_id", trial_id)
        state, values = optuna_outcome(rec, isinstance(self.metric, list))
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)


class CellSearches(Searcher):
    """The searches of several protocol cells behind one Tune searcher, so one Tune run
    holds all their trials and keeps every CPU busy to the end: each new trial comes from
    the cell with the fewest trials so far (the earlier cell on a tie) until every cell has
    its ``budget``. A new trial is also held back while a trial of several CPUs waits for
    them: it starts before any later trial, never starved by 1-worker trials taking each
    CPU as it frees (which fill every CPU otherwise). With one cell it is that cell's
    search. Tune's checkpoint of it is empty: lbt-study resumes from the Optuna database."""

    size_of: Callable[[dict[str, Any]], int] | None = None
    """CPUs a suggested config's trial takes (set by the driver)."""

    def __init__(self, cells: list[tuple[str, StudySearch, int]]) -> None:
        first = cells[0][1]
        super().__init__(metric=first.metric, mode=first.mode)
        self.names = [name for name, _, _ in cells]
        self.searches = [search for _, search, _ in cells]
        self.budgets = [n for _, _, n in cells]
        self.counts = [0] * len(cells)
        self.owner: dict[str, int] = {}
        self.sizes: dict[str, int] = {}  # CPUs of every suggested trial
        self.waiting: set[str] = set()  # suggested, not started yet

    @property
    def total(self) -> int:
        return sum(self.budgets)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # every cell's search was made with its metric, mode and space

    def suggest(self, trial_id: str) -> dict | str | None:
        if any(self.sizes[t] > 1 for t in self.waiting):
            return None
        open_cells = [i for i, n in enumerate(self.budgets) if self.counts[i] < n]
        if not open_cells:
            return Searcher.FINISHED
        i = min(open_cells, key=lambda k: self.counts[k])
        config = self.searches[i].suggest(trial_id)
        if isinstance(config, dict):
            self.owner[trial_id] = i
            self.counts[i] += 1
            self.sizes[trial_id] = self.size_of(config) if self.size_of else 1
            self.waiting.add(trial_id)
        return config

    def started(self, trial_id: str) -> None:
        self.waiting.discard(trial_id)

    def waits_again(self, trial_id: str) -> None:
        """A trial Tune restarts waits for its resources again."""
        if trial_id in self.sizes:
            self.waiting.add(trial_id)

    def cell_of(self, trial_id: str) -> str:
        return self.names[self.owner[trial_id]]

    def optuna_number(self, trial_id: str) -> int | None:
        i = self.owner.get(trial_id)
        return None if i is None else self.searches[i].optuna_number(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searches[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.started(trial_id)  # a trial that ends without starting waits no more
        if trial_id in self.owner:
            self.searches[self.owner[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to keep: the Optuna database and the tables are the record."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see ``save``)."""


def make_search(study: Study, cell: Cell, run_dir: Path, direction: str,
                enqueue: bool = True, storage_url: str | None = None) -> StudySearch:
    """OptunaSearch on the cell's study in ``storage_url`` (default: the run's SQLite;
    lbt_study.study.storage), created or loaded when it exists; the initial points are enqueued
    only when the study is new."""
    storage = open_storage(resolve(storage_url, run_dir))
    mode = "max" if direction == "maximize" else "min"
    search = StudySearch(
        space=SpaceOf(study, cell),
        metric=["objective", "seconds_to_target"] if study.multi_objective else "objective",
        mode=[mode, "min"] if study.multi_objective else mode,
        sampler=make_sampler(study.sampler_name, study.sampler_seed, study.multi_objective),
        study_name=cell.study_name,
        storage=storage,
        points_to_evaluate=(list(study.initial_points) or None) if enqueue else None,
    )
    search.intermediate_values = study.optuna_intermediate_values
    return search


def make_sampler(name: str, seed: int, multi: bool) -> optuna.samplers.BaseSampler:
    """tpe: Optuna's TPE (NSGA-II when there are several objectives); qmc: scrambled Sobol
    quasi-random points (Shallue et al. 2018 used quasi-random search); random."""
    if name == "qmc":
        with warnings.catch_warnings():  # "QMCSampler is experimental": said once, in docs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if multi:
        return PicklableNSGAII(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """NSGA-II that pickles: Optuna 5.1's genetic samplers hold a ``threading.Lock``, and
    Tune pickles its searcher (sampler included) into tuner.pkl when the Tuner is built."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


