"""study.json: what a run was asked to do, read and written by one class.

``StudyRecord`` is written once when a study starts (``lbt-study run``), updated by the
adaptive protocol after every round (``stop_when``, ``adaptive_rounds``, ``trials``), and
read by ``resume``, ``results`` and the report. Keys an older or newer version wrote that
this one does not know are kept on rewrite (``extra="allow"``). ``raw`` is the one reader of
the file's bytes: the report reads a damaged record leniently from it (and says what is
wrong), ``read`` is strict (``resume`` continues only a record it fully understands).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lbt_study.errors import UserError, one_line
from lbt_study.records.rundir import STUDY_JSON


class StudyRecord(BaseModel):
    """The fields of study.json (see README, "run directory")."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    trials: int
    """Trials asked for in all (every search; an adaptive study's rounds so far)."""
    objective_direction: Literal["maximize", "minimize"]
    workload: str | None = None
    spec: str | None = None
    """The spec file's path when the run started (its copy is the run directory's spec.py)."""
    trials_per_search: int | None = None
    protocol: str = "joint"
    searches: list[str] = Field(default_factory=list)
    """The Optuna study name of every search, in order."""
    fixed: dict[str, Any] = Field(default_factory=dict)
    sampler: str | None = None
    sampler_seed: int | None = None
    multi_objective: bool = False
    objective: str | None = None
    target: float | None = None
    target_crossing: Literal["first", "confirmed"] = "confirmed"
    """The rule the at-target columns were measured with. Absent from records written before
    the setting existed, whose tables used the confirmed rule; a new run always writes it."""
    targets: list[float] = Field(default_factory=list)
    asha: dict[str, Any] | None = None
    branched: dict[str, Any] | None = None
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    storage: str | None = None
    """The Optuna storage URL with its password masked (None: the run's SQLite)."""
    log: list[str] = Field(default_factory=list)
    lbt_study_version: str | None = None
    created: str | None = None
    stop_when: dict[str, Any] | None = None
    adaptive_rounds: list[dict[str, Any]] = Field(default_factory=list)

    @staticmethod
    def path(run_dir: Path) -> Path:
        return Path(run_dir) / STUDY_JSON

    @classmethod
    def raw(cls, run_dir: Path) -> dict[str, Any] | None:
        """The file as a dict (None if there is none); unreadable JSON or anything but an
        object is a ``UserError`` naming the file."""
        path = cls.path(run_dir)
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise UserError(f"{path} is corrupted: {one_line(exc)}") from None
        if not isinstance(meta, dict):
            raise UserError(f"{path} is corrupted: a {type(meta).__name__}, not a JSON object")
        return meta

    @classmethod
    def read(cls, run_dir: Path) -> StudyRecord | None:
        """The record (None if there is none); a missing or invalid field is a one-line
        ``UserError`` naming it."""
        meta = cls.raw(run_dir)
        if meta is None:
            return None
        try:
            return cls.model_validate(meta)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}"
                               for e in exc.errors())
            raise UserError(f"{cls.path(run_dir)} is corrupted: {fields}") from None

    def write(self, run_dir: Path) -> None:
        """The record into ``run_dir`` (atomically: a reader never sees half a file)."""
        path = self.path(run_dir)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, default=str))
        os.replace(tmp, path)

    def updated(self, **changes: Any) -> StudyRecord:
        """A copy with ``changes``, validated."""
        return type(self).model_validate({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Every field and kept extra key, as JSON values."""
        return self.model_dump(mode="json")
