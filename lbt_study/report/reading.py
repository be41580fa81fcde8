"""Reading a run directory for the report: study.json, checked, and the result tables.

A run directory that has study.json but no tables yet (a study that has just started) reads
as empty tables with a note; one with neither is not a run directory (``UserError``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from lbt_study.analysis.summary import StudyInfo
from lbt_study.errors import UserError
from lbt_study.results import load_results
from lbt_study.rundir import STUDY_JSON, TRIALS, has_table, table_paths
from lbt_study.schema import DIRECTIONS


def read_study(run_dir: Path) -> StudyInfo:
    """study.json of ``run_dir`` (see ``_study_json``) and when its trials table was written."""
    return replace(_study_json(run_dir), results_written=results_written(run_dir))


def _study_json(run_dir: Path) -> StudyInfo:
    """study.json of ``run_dir``: direction and target checked, nothing guessed when absent."""
    path = run_dir / STUDY_JSON
    if not path.is_file():
        return StudyInfo({}, None, None, (f"{path.name} is missing: the study's name, objective "
                                          "direction and target are unknown (nothing is guessed)",))
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return StudyInfo({}, None, None, (f"{path.name} could not be read: {exc}",))
    if not isinstance(meta, dict):
        return StudyInfo({}, None, None, (f"{path.name} does not hold a JSON object",))
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
    return StudyInfo(meta, direction, target, tuple(problems),
                     targets=tuple(float(t) for t in targets))


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
