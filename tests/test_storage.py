"""Study storage (lbt_study.study.storage): Optuna's journal file, SIGKILLed and resumed; bad
storage URLs as one line and exit 2 before anything starts; passwords never written down.
PostgreSQL itself: tests/test_storage_postgres.py."""

import socket
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from test_resume import SPEC as RESUME_SPEC
from test_resume import cli, run_then_kill

from lbt_study import load_results
from lbt_study.cli import main
from lbt_study.errors import UserError
from lbt_study.study.storage import (
    SPEC_HASH_ATTR,
    claim_studies,
    open_storage,
    parse_storage,
    with_password,
)

SPEC = RESUME_SPEC


def one_line_error(capsys, *argv) -> str:
    """Run the CLI in-process: exit 2, one line on stderr, no traceback; the line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    print(err.strip())
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def assert_resumed_exactly(run_dir, study_name, storage, trials=7):
    """`lbt-study resume` after a SIGKILL: every trial of before kept as it was, the study
    at ``trials`` trials, none twice, Optuna agreeing. Returns (lost, run twice)."""
    before, _ = load_results(run_dir)
    assert 3 <= len(before) < trials
    resumed = cli("resume", str(run_dir), "--num-cpus", "2", "--no-report")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"{len(before)} of {trials} trials finished" in out
    after, history = load_results(run_dir)
    lost = len(set(before["trial_id"]) - set(after["trial_id"])) + max(0, trials - len(after))
    twice = (len(after) - after["trial_id"].nunique()) + \
        (len(after) - after["optuna_trial_number"].nunique())
    assert (lost, twice) == (0, 0)
    assert len(after) == trials
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    pd.testing.assert_series_equal(kept["final_objective"].reset_index(drop=True),
                                   before["final_objective"].reset_index(drop=True))
    assert set(history["trial_id"]) == set(after["trial_id"])
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == trials and TrialState.RUNNING not in states
    interrupted = [t for t in study.trials if t.user_attrs.get("status") == "interrupted"]
    assert len(study.trials) == trials + len(interrupted)
    assert {t.number for t in study.trials if t.state == TrialState.COMPLETE} == \
        set(after["optuna_trial_number"])
    return lost, twice


def journal_storage(path):
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@pytest.mark.ray
@pytest.mark.slow  # 30-45 s on 2 cores; PostgreSQL and SQLite kill-and-resume run by default
def test_sigkill_then_resume_on_journal_storage(tmp_path):
    log = tmp_path / "shared" / "study.journal"
    log.parent.mkdir()
    source = SPEC.replace('name="killed"', 'name="journal-killed"').replace(
        "max_concurrent_trials=1,", f"max_concurrent_trials=1, storage='journal:{log}',")
    t0 = time.time()
    run_dir = run_then_kill(tmp_path, source)
    assert not (run_dir / "optuna.db").exists() and log.is_file()
    lost, twice = assert_resumed_exactly(run_dir, "journal-killed", journal_storage(log))
    print(f"journal kill-and-resume: lost {lost}, twice {twice}, {time.time() - t0:.1f} s")


def test_unknown_scheme_is_one_line(capsys, tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    err = one_line_error(capsys, "run", str(tmp_path / "spec.py"), "--run-dir",
                         str(tmp_path / "run"), "--storage", "redis://user:pw@host/0")
    assert err == ("lbt-study: error: unknown storage scheme 'redis'; allowed: sqlite:///PATH, "
                   "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, "
                   "mysql://USER[:PASSWORD]@HOST[:PORT]/DB, journal:PATH")
    assert not (tmp_path / "run").exists()


def test_unknown_scheme_in_the_spec_is_one_line(capsys, tmp_path):
    (tmp_path / "spec.py").write_text(SPEC.replace(
        "max_concurrent_trials=1,", "max_concurrent_trials=1, storage='mongodb://x/y',"))
    err = one_line_error(capsys, "run", str(tmp_path / "spec.py"))
    assert "invalid Study: unknown storage scheme 'mongodb'; allowed: sqlite:///PATH" in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_unreachable_host_is_one_line_within_the_timeout(capsys, tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    port = _closed_port()
    t0 = time.time()
    err = one_line_error(capsys, "run", str(tmp_path / "spec.py"), "--run-dir",
                         str(tmp_path / "run"), "--storage",
                         f"postgresql://lbt:hunter2@127.0.0.1:{port}/studies")
    assert err.startswith(f"lbt-study: error: cannot open the Optuna storage "
                          f"postgresql://lbt@127.0.0.1:{port}/studies: OperationalError: "
                          f'connection failed: connection to server at "127.0.0.1", port '
                          f"{port} failed: Connection refused"), err
    assert "hunter2" not in err
    assert time.time() - t0 < 30  # the spec check included; the connect itself is 5 s at most
    assert not (tmp_path / "run").exists()


def test_a_silent_host_times_out_in_seconds():
    """A host that never answers (TEST-NET-1): the connect gives up within its timeout."""
    t0 = time.time()
    with pytest.raises(UserError, match="cannot open the Optuna storage postgresql://u@192.0.2.1"):
        open_storage(parse_storage("postgresql://u:p@192.0.2.1:5432/db"), timeout=2)
    assert time.time() - t0 < 10


def test_journal_in_a_missing_directory_is_one_line(capsys, tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    err = one_line_error(capsys, "run", str(tmp_path / "spec.py"), "--storage",
                         f"journal:{tmp_path}/nowhere/study.journal")
    assert f"directory {tmp_path}/nowhere does not exist" in err


def test_masking_and_the_password_from_the_environment(monkeypatch):
    url = parse_storage("postgresql+psycopg2://lbt:p%40ss@db.example:5433/studies")
    assert url.masked == "postgresql+psycopg2://lbt@db.example:5433/studies"
    assert url.password == "p@ss"
    bare = parse_storage("postgresql://lbt@db.example/studies")
    monkeypatch.delenv("LBT_STORAGE_PASSWORD", raising=False)
    assert with_password(bare) == bare  # libpq may still find one (PGPASSWORD, ~/.pgpass)
    monkeypatch.setenv("LBT_STORAGE_PASSWORD", "from-env")
    assert with_password(bare).password == "from-env"
    assert with_password(url).password == "p@ss"  # a URL's own password wins
    assert parse_storage("journal:rel/x.log").url.startswith("journal:/")
    assert parse_storage("sqlite:///rel/x.db").url == f"sqlite:///{Path.cwd() / 'rel/x.db'}"
    with pytest.raises(UserError, match="names no database"):
        parse_storage("postgresql://lbt@host")


def test_a_study_of_another_spec_is_refused_and_this_specs_resumed(tmp_path):
    storage = journal_storage(tmp_path / "j.log")
    claim_studies(storage, "journal:j", ["s"], ["maximize"], "a" * 16, tmp_path, new_run=True)
    assert optuna.load_study(study_name="s", storage=storage).user_attrs[SPEC_HASH_ATTR] == \
        "a" * 16
    with pytest.raises(UserError, match="of another spec"):
        claim_studies(storage, "journal:j", ["s"], ["maximize"], "b" * 16, tmp_path, True)
    with pytest.raises(UserError, match="of this spec .* continue it with `lbt-study resume`"):
        claim_studies(storage, "journal:j", ["s"], ["maximize"], "a" * 16, tmp_path, True)
    claim_studies(storage, "journal:j", ["s"], ["maximize"], "a" * 16, tmp_path, False)
