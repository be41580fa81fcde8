"""A run directory is driven by one live driver at a time.

``run`` and ``resume`` hold ``RUN_DIR/driver.lock`` for as long as they drive the study: an
exclusive ``flock`` on the file (the kernel drops it when the process dies, however it dies,
so a dead driver's lock is taken over without a race; a driver that finishes removes it)
whose text says who holds it (pid, host, command, start) and whose modification time is the
driver's heartbeat, touched every ``HEARTBEAT_S`` seconds. A second driver is refused in one
line that names the holder and how long ago it last wrote. A filesystem whose locks do not
reach other hosts is covered by the heartbeat: a holder on another host whose heartbeat is
younger than ``STALE_S`` is taken as alive even when the lock could be had.

Readers (``results``, ``report``) take no lock: they read a live run directory as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lbt_study.errors import UserError

LOCK = "driver.lock"
HEARTBEAT_S = 5.0
STALE_S = 60.0
"""A holder on another host that has not written for this long is taken as dead."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run directory's lock."""

    pid: int | None
    host: str
    command: str
    started: float
    last_write: float
    """The heartbeat: the lock file's modification time (seconds since the epoch)."""

    def said(self, now: float | None = None) -> str:
        ago = max(0.0, (now or time.time()) - self.last_write)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return (f"`lbt-study {self.command}`, pid {self.pid} on host {self.host}, started "
                f"{started}, last wrote {ago:.0f} s ago")


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK


def read_holder(run_dir: Path) -> Holder | None:
    """The lock file's holder as written (None: no lock file, or one that says nothing)."""
    path = lock_path(run_dir)
    try:
        text, mtime = path.read_text(encoding="utf-8"), path.stat().st_mtime
        info = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    pid = info.get("pid")
    return Holder(pid if isinstance(pid, int) else None, str(info.get("host", "?")),
                  str(info.get("command", "?")), float(info.get("started", mtime)), mtime)


def live_holder(run_dir: Path) -> Holder | None:
    """The driver holding ``run_dir`` now, or None (no lock file, or its holder is dead).
    Reads only: a read-only run directory is answered too."""
    path = lock_path(run_dir)
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(run_dir) or Holder(None, "?", "?", time.time(), time.time())
    except OSError:
        pass  # a filesystem without locks: the heartbeat decides
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    holder = read_holder(run_dir)
    return holder if holder is not None and _alive_elsewhere(holder) else None


def _alive_elsewhere(holder: Holder) -> bool:
    """A holder on another host (whose process this one cannot see) that wrote recently."""
    return holder.host != socket.gethostname() and time.time() - holder.last_write < STALE_S


def in_use(run_dir: Path, holder: Holder) -> UserError:
    return UserError(f"run directory {run_dir} is in use by a live driver ({holder.said()}); "
                     "wait for it to finish (lbt-study results and report read it meanwhile)")


class DriverLock:
    """The held lock of one run directory: its heartbeat runs until ``release``."""

    def __init__(self, run_dir: Path, fd: int, previous: Holder | None) -> None:
        self.run_dir, self.fd = Path(run_dir), fd
        self.previous = previous
        """The dead driver whose lock was taken over (None: there was none)."""
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="lbt-driver-lock",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        self._stop.set()
        self._beat.join()
        with contextlib.suppress(OSError):  # a finished driver leaves no lock behind
            lock_path(self.run_dir).unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> DriverLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(run_dir: Path, command: str) -> DriverLock:
    """Hold ``run_dir`` for this process (``command``: run or resume), or a one-line
    ``UserError`` naming the live driver that holds it. A dead driver's lock is taken over
    (``DriverLock.previous`` says whose)."""
    for _ in range(5):  # a lock file removed by its finishing holder meanwhile: open again
        fd = _locked(run_dir)
        if fd is not None:
            break
    else:
        raise UserError(f"run directory {run_dir}: could not take {LOCK} (other drivers "
                        "keep starting and finishing there)")
    previous = read_holder(run_dir)
    if previous is not None and _alive_elsewhere(previous):
        os.close(fd)
        raise in_use(run_dir, previous)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    os.fsync(fd)
    return DriverLock(run_dir, fd, previous)


def _locked(run_dir: Path) -> int | None:
    """The lock file, open and locked; None when the file locked is no longer the one at
    the path (its holder finished and removed it between our open and our lock)."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot write run directory {run_dir}: {exc.strerror} "
                        f"({path.name}); run and resume need to write there") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_holder(run_dir) or Holder(None, "?", "?", time.time(), time.time())
        raise in_use(run_dir, holder) from None
    except OSError:
        pass  # no locks on this filesystem: the heartbeat still refuses a live holder
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd
