"""A trial's rows, appended by the trial itself to a file of its own (JSON lines).

Rank 0 of every trial appends each row it reports (evaluations, the final or stopped row, a
failed trial's last row) the moment it is made, one line per row, flushed, so a trial or a
driver that dies keeps every row written before it died (a line cut by the kill is the last
one and is skipped). The driver reads a trial's rows when the trial finishes and never holds
them while it runs.

A trial restarted from a checkpoint appends again from the checkpoint's step: reading keeps,
for every step, the rows of the latest attempt (an evaluation at step ``s`` replaces the rows
at steps ``>= s`` before it; a row without one, such as a failed trial's last, those at steps
``> s``), so there are no gaps and no duplicates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

Row = dict[str, Any]


class RowLog:
    """The append-only writer of one trial's rows; opens the file at the first row."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file: IO[str] | None = None

    def append(self, row: Row) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", encoding="utf-8")
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()  # in the OS's hands: a killed process loses nothing

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """The trial's rows, the latest attempt at every step, in step order ([] if none)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut by a kill mid-write: the last line
            row = json.loads(line)
            step = row.get("step")
            while step is not None and rows and _replaces(row, rows[-1]):
                rows.pop()  # an earlier attempt's rows from this step on
            rows.append(row)
    return rows


def _replaces(row: Row, earlier: Row) -> bool:
    step, before = row["step"], earlier.get("step", -1)
    return before > step or (before == step and "val_loss" in row)
