"""Reading a run directory for the report: study.json, checked, and the result tables.

A run directory that has study.json but no tables yet (a study that has just started) reads
as empty tables with a note; one with neither is not a run directory (``UserError``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from lbt_study.analysis.summary import StudyInfo
from lbt_study.errors import UserError
from lbt_study.records.record import StudyRecord
from lbt_study.records.results import load_results
from lbt_study.records.rundir import STUDY_JSON, TRIALS, has_table, table_paths
from lbt_study.records.schema import DIRECTIONS
from lbt_study.train.config import CROSSINGS


def read_study(run_dir: Path) -> StudyInfo:
    """study.json of ``run_dir`` (see ``_study_json``) and when its trials table was written."""
    return replace(_study_json(run_dir), results_written=results_written(run_dir))


def _study_json(run_dir: Path) -> StudyInfo:
    """study.json of ``run_dir``: direction and target checked, nothing guessed when absent."""
    try:  # read leniently: the report says what is wrong with each field and goes on
        meta = StudyRecord.raw(run_dir)
    except UserError as exc:
        return StudyInfo({}, None, None, (f"{exc}: the study's name, objective direction and "
                                          "target are unknown (nothing is guessed)",))
    if meta is None:
        return StudyInfo({}, None, None, (f"{STUDY_JSON} is missing: the study's name, "
                                          "objective direction and target are unknown "
                                          "(nothing is guessed)",))
    problems = []
    direction = meta.get("objective_direction")
    if direction not in DIRECTIONS:
        problems.append(f"objective_direction is {direction!r}, not one of {DIRECTIONS}: "
                        "analyses that rank trials are left out")
        direction = None
    target = meta.get("target")
    if target is not None and not _is_number(target):
        problems.append(f"target is {target!r}, not a number: no steps to target")
        target = None
    target = None if target is None else float(target)
    targets = meta.get("targets", [target] if target is not None else [])
    if not isinstance(targets, list) or not all(map(_is_number, targets)):
        problems.append(f"targets is {targets!r}, not a list of numbers: only the target is "
                        "measured")
        targets = [target] if target is not None else []
    crossing = _crossing(meta, problems)
    return StudyInfo(meta, direction, target, tuple(problems),
                     targets=tuple(float(t) for t in targets), target_crossing=crossing)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """(trials, history, notes); a run directory with study.json but no trials table yet is
    empty. A table that exists but cannot be read is an error (nothing is written then)."""
    try:
        trials, history = load_results(run_dir)
    except UserError as exc:
        if not (run_dir / STUDY_JSON).is_file() or has_table(run_dir, TRIALS):
            raise
        return pd.DataFrame(), pd.DataFrame(), (f"no result tables yet: {exc}",)
    return trials, history, ()


def results_written(run_dir: Path) -> str | None:
    """When the trials table was last written (local time, seconds), if it exists."""
    for path in table_paths(run_dir, TRIALS):
        if path.is_file():
            stamp = dt.datetime.fromtimestamp(path.stat().st_mtime)
            return stamp.isoformat(timespec="seconds")
    return None


def _crossing(meta: dict, problems: list[str]) -> str:
    """The rule study.json records (``confirmed`` when absent: the only rule before the
    setting existed)."""
    rule = meta.get("target_crossing", "confirmed")
    if rule not in CROSSINGS:
        problems.append(f"target_crossing is {rule!r}, not one of {tuple(CROSSINGS)}: the "
                        "confirmed rule is assumed")
        return "confirmed"
    return rule
