"""Where a study's Optuna studies live: the run directory's SQLite (the default), any
SQLAlchemy URL Optuna takes (``postgresql://USER@HOST:PORT/DB``, ``mysql://...``,
``sqlite:///PATH``), or Optuna's journal file ``journal:PATH`` (for NFS, where SQLite's locks
are unreliable).

A URL's password is never written down: study.json records the URL without it
(``masked``). Where it is left out, it comes from ``LBT_STORAGE_PASSWORD`` (``with_password``),
or, for PostgreSQL, libpq's own ``PGPASSWORD`` or ``~/.pgpass``. ``open_storage`` connects
within a short timeout, so an unreachable host, a wrong password or a missing database is one
line before any trial starts; ``claim_studies`` refuses an Optuna study of the same name that
belongs to another spec (each study carries its spec's hash in its user attrs).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbt_study.errors import UserError, one_line
from lbt_study.records.lock import live_holder
from lbt_study.records.rundir import optuna_url

PASSWORD_ENV = "LBT_STORAGE_PASSWORD"
"""The storage password, for a URL that names a user but no password."""
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
"""SQLAlchemy dialects Optuna's RDBStorage supports (with an optional ``+driver``)."""
JOURNAL = "journal"
ALLOWED = ("sqlite:///PATH", "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB",
           "mysql://USER[:PASSWORD]@HOST[:PORT]/DB", "journal:PATH")
SPEC_HASH_ATTR = "lbt_spec_sha256"
RUN_DIR_ATTR = "lbt_run_dir"
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: ``url`` as given (password included), ``kind`` ``rdb`` or
    ``journal``, ``scheme`` (the dialect, or ``journal``)."""

    url: str
    kind: str
    scheme: str

    @property
    def masked(self) -> str:
        """The URL without its password: what study.json records and messages show."""
        if self.kind == JOURNAL:
            return self.url
        return _sa_url(self.url)._replace(password=None).render_as_string(hide_password=False)

    @property
    def password(self) -> str | None:
        return None if self.kind == JOURNAL else _sa_url(self.url).password


def _sa_url(url: str) -> Any:
    from sqlalchemy.engine import make_url

    return make_url(url)


def parse_storage(url: str) -> StorageURL:
    """Check a storage URL's form and scheme (nothing is opened); ``journal:PATH`` gets an
    absolute path. An unknown scheme is a ``UserError`` listing the allowed ones."""
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"storage must be a URL, got {url!r}; allowed: {', '.join(ALLOWED)}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == JOURNAL:
        path = url.split(":", 1)[1].removeprefix("//")
        if not path:
            raise UserError("storage journal: needs a file path, e.g. journal:/shared/study.log")
        return StorageURL(f"{JOURNAL}:{Path(path).expanduser().resolve()}", JOURNAL, JOURNAL)
    dialect = scheme.split("+", 1)[0]
    if dialect not in RDB_SCHEMES or "://" not in url:
        shown = scheme or url.split("/", 1)[0][:40]
        raise UserError(f"unknown storage scheme {shown!r}; allowed: {', '.join(ALLOWED)}")
    bad = _bad_part(url)
    try:
        parsed = None if bad else _sa_url(url)
    except Exception:  # SQLAlchemy's ArgumentError, ValueError for a bad port
        bad = f"{url.split('://', 1)[1].split('/', 1)[0].rsplit('@', 1)[-1]!r} after the user"
    if parsed is None:
        raise UserError(f"storage URL {_masked(url)} is malformed: {bad}; "
                        f"allowed: {', '.join(ALLOWED)}") from None
    if dialect != "sqlite" and not parsed.database:
        raise UserError(f"storage {_masked(url)} names no database (.../DB)")
    if dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
        # absolute, so that resume and results find it from any directory
        absolute = str(Path(parsed.database).expanduser().resolve())
        url = parsed._replace(database=absolute).render_as_string(hide_password=False)
    return StorageURL(url, "rdb", dialect)


def _bad_part(url: str) -> str | None:
    """The part of an RDB URL's HOST[:PORT] that is malformed, in words (None: none)."""
    hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):
        if "]" not in hostport:
            return f"host {hostport!r} (an IPv6 address needs its closing ']')"
        port = hostport.split("]", 1)[1].removeprefix(":")
    else:
        port = hostport.partition(":")[2]
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return f"port {port!r} (a port is a number in 1..65535)"
    return None


def _masked(url: str) -> str:
    try:
        return StorageURL(url, "rdb", "").masked
    except Exception:  # unparsable: the password, if any, is cut out by hand
        scheme, _, rest = url.partition("://")
        user, at, host = rest.rpartition("@")
        return f"{scheme}://{user.split(':', 1)[0]}{at}{host}"


def with_password(storage: StorageURL) -> StorageURL:
    """The URL with ``LBT_STORAGE_PASSWORD`` filled in where it names a user but no
    password (else as it is: libpq may still find one in PGPASSWORD or ~/.pgpass)."""
    secret = os.environ.get(PASSWORD_ENV)
    if storage.kind == JOURNAL or not secret:
        return storage
    url = _sa_url(storage.url)
    if not url.username or url.password:
        return storage
    return StorageURL(url.set(password=secret).render_as_string(hide_password=False),
                      storage.kind, storage.scheme)


def resolve(url: str | None, run_dir: Path) -> StorageURL:
    """The storage to open: ``url`` (password from the environment where it has none), or
    the run directory's SQLite when ``url`` is None."""
    return with_password(parse_storage(url if url else optuna_url(run_dir)))


def recorded(stored: str | None, given: str | None) -> str | None:
    """The storage of an existing run: ``--storage`` given again, else ``stored``, the one
    study.json records (None: the run directory's SQLite)."""
    return given or stored or None


def open_storage(storage: StorageURL, timeout: int = CONNECT_TIMEOUT_S) -> Any:
    """The Optuna storage, connected (an RDB within ``timeout`` seconds): an unreachable
    host, a refused password, a missing database or driver is one ``UserError`` line."""
    import optuna

    if storage.kind == JOURNAL:
        return _open_journal(storage)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if storage.scheme in ("postgresql", "mysql"):
        kwargs["connect_args"] = {"connect_timeout": int(timeout)}
    try:
        rdb = optuna.storages.RDBStorage(storage.url, engine_kwargs=kwargs)
        # the engine keeps the password; a pickle of the storage (Tune pickles its searcher
        # into the run directory's tuner.pkl) gets the URL without it
        rdb.url = storage.masked
        return rdb
    except ImportError as exc:  # Optuna's, from the driver's ModuleNotFoundError
        name = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None)
        hint = " (pip install 'psycopg[binary]')" if storage.scheme == "postgresql" else ""
        raise UserError(f"cannot open the Optuna storage {storage.masked}: its driver "
                        f"{name or '?'!r} is not installed{hint}") from None
    except Exception as exc:  # SQLAlchemy's OperationalError and the drivers' own
        raise UserError(f"cannot open the Optuna storage {storage.masked}: "
                        f"{_reason(exc, storage.password)}") from None


def _open_journal(storage: StorageURL) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage.url.split(":", 1)[1])
    if not path.parent.is_dir():
        raise UserError(f"cannot open the Optuna storage {storage.url}: directory "
                        f"{path.parent} does not exist")
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:
        raise UserError(f"cannot open the Optuna storage {storage.url}: {one_line(exc)}") \
            from None


def _reason(exc: BaseException, password: str | None) -> str:
    """The driver's message (the first line of SQLAlchemy's wrapped ``orig``), password
    scrubbed."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    text = f"{type(orig).__name__}: {lines[0] if lines else ''}"[:300]
    return text.replace(password, "***") if password else text


def spec_hash(source: str) -> str:
    """The spec's identity in the storage: SHA-256 of its source text."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def claim_studies(storage: Any, where: str, names: list[str], directions: list[str],
                  digest: str, run_dir: Path, new_run: bool) -> None:
    """Create each of the run's Optuna studies that does not exist yet, tagged with the
    spec's hash and the run directory. An existing one must carry this spec's hash (a study
    of no lbt-study spec counts as another's; on resume, one without a hash, written before
    hashes were kept, is taken); ``run`` refuses an existing one even of this spec (two runs
    in one study would each fail the other's running trials on resume)."""
    import optuna

    existing = set(study_names(storage))
    if not new_run and not existing & set(names):
        raise UserError(f"the storage {where} holds none of this run's Optuna studies "
                        f"({', '.join(map(repr, names))}; spec hash {digest}): resume "
                        "with the storage the run used (study.json's, or leave out --storage)")
    for name in names:
        if name not in existing:
            continue
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        theirs, their_dir = attrs.get(SPEC_HASH_ATTR), attrs.get(RUN_DIR_ATTR, "unknown")
        if theirs != digest and (theirs is not None or new_run):
            raise UserError(f"the storage {where} already has an Optuna study {name!r} of "
                            f"another spec (spec hash {theirs}, this spec's {digest}; run "
                            f"directory {their_dir}): choose another Study name or storage")
        if new_run:
            raise UserError(f"the storage {where} already has the Optuna study {name!r} of "
                            f"this spec (run directory {their_dir}): "
                            f"{_continue_hint(their_dir)}, or choose another Study name")
    for name in names:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                    load_if_exists=True)
        study.set_user_attr(SPEC_HASH_ATTR, digest)
        if RUN_DIR_ATTR not in study.user_attrs:
            study.set_user_attr(RUN_DIR_ATTR, str(Path(run_dir).resolve()))


def _continue_hint(run_dir: str) -> str:
    """What to do with the other run: wait for its live driver, else resume it."""
    holder = live_holder(Path(run_dir)) if Path(run_dir).is_dir() else None
    if holder is not None:
        return f"its driver is still running ({holder.said()}); wait for it to finish"
    return "continue it with `lbt-study resume` there"


@dataclass(frozen=True)
class Connected:
    """A storage URL (password included) and its opened Optuna storage."""

    url: StorageURL
    handle: Any

    @property
    def masked(self) -> str:
        return self.url.masked


def url_of(store: Connected | None) -> str | None:
    """The URL to open ``store`` again (password included; None: the run's SQLite)."""
    return store.url.url if store else None


def handle_of(store: Connected | None) -> Any:
    """The opened Optuna storage of ``store`` (None: the run's SQLite, opened by its user)."""
    return store.handle if store else None


def connect(url: str | None) -> Connected | None:
    """Parse, fill in the password and open ``url``: one line, exit 2, for any problem,
    before a run directory is made or a trial starts. None (the run directory's SQLite,
    opened once the run directory exists) stays None."""
    if not url:
        return None
    storage = with_password(parse_storage(url))
    return Connected(storage, open_storage(storage))


def claim(store: Connected | None, run_dir: Path, names: list[str], direction: str,
          multi_objective: bool, spec_source: str, new_run: bool) -> None:
    """``claim_studies`` in ``store`` (None: the run directory's SQLite)."""
    store = store or connect(optuna_url(run_dir))
    directions = [direction, *(["minimize"] if multi_objective else [])]
    claim_studies(store.handle, store.masked, names, directions, spec_hash(spec_source),
                  run_dir, new_run)


def summary_line(store: Connected, names: list[str]) -> str:
    """What the storage holds of the run's studies: trials by state."""
    import optuna

    present = set(study_names(store.handle))
    parts = []
    for name in names:
        if name not in present:
            parts.append(f"{name!r} not created yet")
            continue
        trials = optuna.load_study(study_name=name, storage=store.handle).get_trials(
            deepcopy=False)
        counts = Counter(t.state.name.lower() for t in trials)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"
        parts.append(f"{name!r}: {shown}")
    return f"Optuna storage {store.masked}: {'; '.join(parts)}"
