"""The run directory's file names, in one place.

A run directory holds ``study.json`` (what was asked), ``spec.py`` (a copy of the spec),
``optuna.db`` (the Optuna studies, SQLite), the result tables ``trials`` and ``history`` (each
as Parquet and CSV), ``trial_rows/`` (every trial's rows, appended by the trial), ``ray/``
(Tune and Train state) and ``report/``.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import tempfile
from pathlib import Path

import pandas as pd

from lbt_study.errors import UserError, one_line

STUDY_JSON = "study.json"
SPEC = "spec.py"
OPTUNA_DB = "optuna.db"
TRIALS = "trials"
HISTORY = "history"
TABLE_SUFFIXES = (".parquet", ".csv")
TRIAL_ROWS = "trial_rows"
"""Each trial's rows as the trial appended them, one JSON-lines file per trial (see
``lbt_study.records.rowlog``); the history table is merged from them."""
RAY_DIR = "ray"
REPORT_DIR = "report"


def table_paths(run_dir: Path, name: str) -> tuple[Path, Path]:
    """(Parquet, CSV) paths of table ``name`` in ``run_dir``."""
    return run_dir / f"{name}.parquet", run_dir / f"{name}.csv"


def has_table(run_dir: Path, name: str) -> bool:
    return any(p.is_file() for p in table_paths(run_dir, name))


def optuna_url(run_dir: Path) -> str:
    """The SQLAlchemy URL of the run's Optuna database."""
    return f"sqlite:///{Path(run_dir) / OPTUNA_DB}"


KEY_COLUMNS: dict[str, tuple[str, ...]] = {TRIALS: ("trial_id", "status"),
                                           HISTORY: ("trial_id", "step")}
"""Columns every table lbt-study writes has (the rest may vary with the version and workload);
a file without them is not such a table."""


def read_table(run_dir: Path, name: str) -> pd.DataFrame:
    """Table ``name`` of ``run_dir``: the Parquet file, else the CSV. A file that is empty,
    truncated, corrupt or not an lbt-study table is a ``UserError`` naming it."""
    path = next((p for p in table_paths(Path(run_dir), name) if p.is_file()), None)
    if path is None:
        parquet, csv = table_paths(Path(run_dir), name)
        raise UserError(f"{run_dir} has no {name} table ({parquet.name} or {csv.name}); "
                        "is it an lbt-study run directory?")
    try:
        table = _read_file(path)
    except UserError:
        raise
    except Exception as exc:  # pyarrow, pandas and the codecs each raise their own
        raise UserError(f"{path} is corrupt or truncated: {one_line(exc)}") from None
    missing = [c for c in KEY_COLUMNS.get(name, ()) if c not in table.columns]
    if missing:
        raise UserError(f"{path} is not an lbt-study {name} table: it has no column "
                        f"{', '.join(missing)}")
    return table


def _read_file(path: Path) -> pd.DataFrame:
    # One read of the bytes: pyarrow opens a path more than once, and a table replaced in
    # between (a running study rewrites its tables) would pair one file's footer with
    # another's pages.
    data = path.read_bytes()
    if not data:
        raise UserError(f"{path} is empty (0 bytes)")
    if path.suffix == ".parquet":
        return pd.read_parquet(io.BytesIO(data))  # the footer is checked: a cut file fails
    if not data.endswith(b"\n"):  # lbt-study ends every CSV line; a cut file ends mid-line
        raise UserError(f"{path} is truncated (its last line is incomplete)")
    return pd.read_csv(io.BytesIO(data))


OPTUNA_TABLES = ("studies", "trials", "version_info")
"""Tables every Optuna RDB storage has."""


def check_optuna_db(run_dir: Path) -> list[str]:
    """The study names in the run's Optuna database, read without writing to it (SQLite
    read-only: no table creation, no journal, no mtime change). Missing, empty, corrupt,
    truncated or not an Optuna database: a ``UserError`` naming the file."""
    path = Path(run_dir) / OPTUNA_DB
    if not path.is_file():
        raise UserError(f"{path} is missing")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes), not an Optuna database")
    try:
        _check_sqlite(path)
        return _study_names(path)
    except UserError:
        raise
    except Exception as exc:  # sqlite3, SQLAlchemy and Optuna each raise their own
        raise UserError(f"{path} is not a readable Optuna database: {one_line(exc)}") from None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _check_sqlite(path: Path) -> None:
    with contextlib.closing(_connect_read_only(path)) as con:
        problems = [row[0] for row in con.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise UserError(f"{path} is a damaged SQLite database: {'; '.join(problems)[:300]}")
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing:
        raise UserError(f"{path} is not an Optuna database (no table {', '.join(missing)})")


def _study_names(path: Path) -> list[str]:
    """Every study loads and so do its trials, as Optuna reads them."""
    import optuna  # here: the other readers of a run directory need no Optuna

    storage = optuna.storages.RDBStorage(
        "sqlite://", engine_kwargs={"creator": lambda: _connect_read_only(path)},
        skip_table_creation=True)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        for name in names:
            optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        return names
    finally:
        storage.engine.dispose()


def trial_rows_path(run_dir: Path, trial_id: str) -> Path:
    """Where trial ``trial_id`` appends its rows."""
    return Path(run_dir) / TRIAL_ROWS / f"{trial_id}.jsonl"


def check_writable_dir(path: Path, what: str, hint: str = "") -> None:
    """``path`` is a directory this process can write, or one it can make, checked before
    any work and without making it: a file in the way, a read-only filesystem or a path
    that cannot be made is one ``UserError`` naming ``what`` (e.g. "--out") and the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a directory; give a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot make {what} {path}: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass  # made and removed: the one sure test (root ignores permission bits)
    except OSError as exc:
        raise UserError(f"cannot write {what} {path}: {exc.strerror or exc}"
                        f"{'' if existing == path else f' (in {existing})'}{hint}") from None
