"""Studies in a real PostgreSQL server that the tests start and stop themselves: a study
written there and read back by Optuna, a SIGKILLed driver resumed from it (0 lost, 0 twice),
and the one-line errors of a wrong password, a missing database and another spec's study.

The server: Debian's postgresql-15 binaries (initdb, pg_ctl) run as the ``postgres`` system
user (initdb refuses root), a data directory in a temporary directory, a free port on
127.0.0.1, password (SCRAM) authentication.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pytest
from test_resume import cli, run_then_kill
from test_storage import SPEC, assert_resumed_exactly, one_line_error

from lbt_study.study.storage import SPEC_HASH_ATTR

PG_BIN = next((d for d in [Path("/usr/lib/postgresql/15/bin"),
                            *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
               if (d / "initdb").is_file()), Path("/usr/lib/postgresql/15/bin"))
"""Debian's server binaries: 15 (bookworm), else the newest installed."""
PASSWORD = "s3cret-Pw"


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str = "postgres"
    database: str = "lbt"

    def url(self, password: str | None = PASSWORD, database: str | None = None) -> str:
        auth = f"{self.user}:{password}" if password else self.user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database or self.database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> tuple[list[str], int, int]:
    """The command prefix that runs a binary as the server's owner, and its uid, gid."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no `postgres` system user to run initdb as")
    return ["runuser", "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session, database ``lbt``, always stopped after."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (apt-get install postgresql)")
    prefix, uid, gid = _as_postgres()
    base = Path(tempfile.mkdtemp(prefix="lbt-pg-"))
    os.chown(base, uid, gid)
    (base / "pw").write_text(PASSWORD)
    os.chown(base / "pw", uid, gid)
    data, port = base / "data", _free_port()
    subprocess.run([*prefix, PG_BIN / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8",
                    "--auth=scram-sha-256", f"--pwfile={base / 'pw'}", "--no-sync"],
                   check=True, capture_output=True)
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c fsync=off "
               f"-c unix_socket_directories={base}")
    subprocess.run([*prefix, PG_BIN / "pg_ctl", "-D", data, "-l", base / "server.log", "-w",
                    "-t", "60", "-o", options, "start"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD,
                             dbname="postgres", autocommit=True) as con:
            con.execute("CREATE DATABASE lbt")
        yield Postgres(port)
    finally:
        subprocess.run([*prefix, PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*")
            if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.ray
def test_a_study_in_postgresql_is_read_back_by_optuna_and_results(postgres, tmp_path,
                                                                  monkeypatch):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC.replace('name="killed"', 'name="pg-roundtrip"').replace(
        "trials=7", "trials=2"))
    run_dir = tmp_path / "run"
    t0 = time.time()
    driver = cli("run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2",
                 "--storage", postgres.url(), "--no-report")
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out
    print(f"pg round trip run: {time.time() - t0:.1f} s")

    study = optuna.load_study(study_name="pg-roundtrip", storage=postgres.url())
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    trials = pd.read_parquet(run_dir / "trials.parquet")
    by_number = {t.number: t.value for t in study.trials}
    assert {n: by_number[n] for n in trials["optuna_trial_number"]} == \
        dict(zip(trials["optuna_trial_number"], trials["final_objective"], strict=True))
    assert len(study.user_attrs[SPEC_HASH_ATTR]) == 16
    assert not (run_dir / "optuna.db").exists()  # the study lives in PostgreSQL only
    assert _files_containing(run_dir, PASSWORD) == []  # study.json, tuner.pkl, ... included
    assert f"postgresql://postgres@127.0.0.1:{postgres.port}/lbt" in \
        (run_dir / "study.json").read_text()

    # a laptop with the tables and study.json only, the password from the environment
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    for name in ("study.json", "trials.parquet", "history.parquet"):
        shutil.copy(run_dir / name, laptop / name)
    monkeypatch.setenv("LBT_STORAGE_PASSWORD", PASSWORD)
    res = subprocess.run([sys.executable, "-m", "lbt_study.cli", "results", str(laptop)],
                         capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"Optuna storage postgresql://postgres@127.0.0.1:{postgres.port}/lbt: " \
        "'pg-roundtrip': complete 2" in res.stdout
    assert "2 trials (ok 2)" in res.stdout


@pytest.mark.ray  # 35-60 s on 2 cores: the kill-and-resume CI runs on a real server
def test_sigkill_then_resume_on_postgresql(postgres, tmp_path, monkeypatch):
    """The spec names the storage without its password; driver and resume take it from
    LBT_STORAGE_PASSWORD; resume finds the storage in study.json."""
    monkeypatch.setenv("LBT_STORAGE_PASSWORD", PASSWORD)
    url = postgres.url(password=None)
    source = SPEC.replace('name="killed"', 'name="pg-killed"').replace(
        "max_concurrent_trials=1,", f"max_concurrent_trials=1, storage={url!r},")
    t0 = time.time()
    run_dir = run_then_kill(tmp_path, source)
    lost, twice = assert_resumed_exactly(run_dir, "pg-killed", postgres.url())
    print(f"pg kill-and-resume: lost {lost}, twice {twice}, {time.time() - t0:.1f} s")
    assert _files_containing(run_dir, PASSWORD) == []


def _spec(tmp_path: Path, name: str, storage: str | None = None) -> Path:
    spec = tmp_path / f"{name}.py"
    extra = f"storage={storage!r}," if storage else ""
    spec.write_text(SPEC.replace('name="killed"', f"name={name!r}").replace(
        "max_concurrent_trials=1,", f"max_concurrent_trials=1, {extra}"))
    return spec


def test_wrong_password_is_one_line(postgres, tmp_path, capsys):
    spec = _spec(tmp_path, "pw")
    err = one_line_error(capsys, "run", str(spec), "--run-dir", str(tmp_path / "run"),
                         "--storage", postgres.url("wrong-Pw"))
    assert f"cannot open the Optuna storage postgresql://postgres@127.0.0.1:{postgres.port}" \
        "/lbt: OperationalError: connection failed: connection to server at" in err
    assert 'password authentication failed for user "postgres"' in err
    assert "wrong-Pw" not in err  # the password is never shown
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_missing_database_is_one_line(postgres, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LBT_STORAGE_PASSWORD", PASSWORD)
    spec = _spec(tmp_path, "nodb", postgres.url(password=None, database="nodb"))
    err = one_line_error(capsys, "run", str(spec), "--run-dir", str(tmp_path / "run"))
    assert 'database "nodb" does not exist' in err
    assert PASSWORD not in err


def test_existing_study_of_another_spec_is_refused(postgres, tmp_path, capsys, monkeypatch):
    other = optuna.create_study(study_name="taken", storage=postgres.url())
    other.set_user_attr(SPEC_HASH_ATTR, "0123456789abcdef")
    monkeypatch.setenv("LBT_STORAGE_PASSWORD", PASSWORD)
    spec = _spec(tmp_path, "taken", postgres.url(password=None))
    err = one_line_error(capsys, "run", str(spec), "--run-dir", str(tmp_path / "run"))
    assert "already has an Optuna study 'taken' of another spec (spec hash " \
        "0123456789abcdef" in err
    assert optuna.load_study(study_name="taken", storage=postgres.url()).trials == []
