"""A trial's rows, appended by the trial itself to a file of its own (JSON lines).

Rank 0 of every trial appends each row it reports (evaluations, the final or stopped row, a
failed trial's last row) the moment it is made, one line per row, flushed, so a trial or a
driver that dies keeps every row written before it died (a line cut by the kill is the last
one and is skipped). A damaged line anywhere (cut, undecodable bytes, not a JSON row) is
skipped and counted, and the count said once, in one line. The driver reads a trial's rows
when the trial finishes and never holds them while it runs.

A trial restarted from a checkpoint appends again from the checkpoint's step: reading keeps,
for every step, the rows of the latest attempt (an evaluation at step ``s`` replaces the rows
at steps ``>= s`` before it; a row without one, such as a failed trial's last, those at steps
``> s``), so there are no gaps and no duplicates.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

Row = dict[str, Any]
log = logging.getLogger(__name__)


class RowLog:
    """The append-only writer of one trial's rows; opens the file at the first row. A file
    whose last line was cut (a trial killed mid-write, now retried) is first cut back to its
    last whole line, so a retried trial never appends after a cut line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file: IO[str] | None = None

    def append(self, row: Row) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_cut_line(self.path)
            self.file = self.path.open("a", encoding="utf-8")
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()  # in the OS's hands: a killed process loses nothing

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def drop_cut_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (nothing to do when it ends with one)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("rb+") as f:
            f.truncate(data.rfind(b"\n") + 1)


@dataclass
class RowFile:
    """A row file as read: its rows (the latest attempt at every step, in step order) and
    the line numbers of the lines skipped as damaged (cut, undecodable, not a JSON row)."""

    rows: list[Row] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)


def read_row_file(path: str | os.PathLike[str]) -> RowFile:
    """Read a trial's row file line by line; a damaged line is skipped and counted."""
    path = Path(path)
    out = RowFile()
    if not path.is_file():
        return out
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            row = _decode(raw)
            if row is None:
                out.damaged.append(number)
                continue
            step = row.get("step")
            while isinstance(step, int | float) and out.rows and _replaces(row, out.rows[-1]):
                out.rows.pop()  # an earlier attempt's rows from this step on
            out.rows.append(row)
    return out


def _decode(raw: bytes) -> Row | None:
    if not raw.endswith(b"\n"):
        return None  # cut by a kill mid-write
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    return row if step is None or isinstance(step, int | float) else None


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """The trial's rows, the latest attempt at every step, in step order ([] if none);
    damaged lines are skipped and said (``say_damaged``)."""
    read = read_row_file(path)
    if read.damaged:
        say_damaged({Path(path): read.damaged})
    return read.rows


_said: set[str] = set()


def damaged_line(damaged: dict[Path, list[int]]) -> str:
    """One line: how many damaged lines were skipped, in which row files (the first few)."""
    total = sum(len(v) for v in damaged.values())
    shown = "; ".join(f"{p.name} line{'s' if len(v) > 1 else ''} "
                      f"{', '.join(map(str, v[:5]))}{', ...' if len(v) > 5 else ''}"
                      for p, v in sorted(damaged.items())[:3])
    more = f"; and {len(damaged) - 3} more files" if len(damaged) > 3 else ""
    folder = next(iter(damaged)).parent
    return (f"skipped {total} damaged line{'s' if total != 1 else ''} (cut, undecodable or "
            f"not a row) in {len(damaged)} row file{'s' if len(damaged) != 1 else ''} of "
            f"{folder}: {shown}{more}")


def say_damaged(damaged: dict[Path, list[int]]) -> None:
    """Log ``damaged_line`` as a warning, once per process for the same damage."""
    line = damaged_line(damaged)
    if line not in _said:
        _said.add(line)
        log.warning(line)


def _replaces(row: Row, earlier: Row) -> bool:
    step, before = row["step"], earlier.get("step", -1)
    if not isinstance(before, int | float):
        return False
    return before > step or (before == step and "val_loss" in row)
