"""Damaged row files (trial_rows/*.jsonl): read line by line, a damaged line skipped and
counted, the count said once in one line by every command that reads them; a retried
trial never appends after a cut line."""

import json
import logging
import subprocess
import sys

import pytest
from test_cli_errors import finished_run

from lbt_study.records.results import merged_history
from lbt_study.records.rowlog import RowLog, read_row_file, read_rows
from lbt_study.records.rundir import TRIAL_ROWS


def row(step, objective=0.5, **more):
    return {"step": step, "val_loss": 1.0 - objective, "objective": objective,
            "status": "running", **more}


def line(r):
    return (json.dumps(r) + "\n").encode()


CUT = line(row(20))[:17]  # a line a killed trial left half-written


def write_rows(path, *chunks):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    return path


def test_a_cut_line_followed_by_more_lines_is_skipped_and_counted(tmp_path):
    """What a retried trial appended after a cut line (before it cut the line back)."""
    path = write_rows(tmp_path / "t.jsonl", line(row(0)), line(row(10)), CUT + line(row(10, 0.6)),
                      line(row(20, 0.7)))
    read = read_row_file(path)
    assert read.damaged == [3]
    assert [(r["step"], r["objective"]) for r in read.rows] == [(0, 0.5), (10, 0.5), (20, 0.7)]


@pytest.mark.parametrize("bad", [
    b"\xff\xfe\x00 not utf-8\n",  # undecodable bytes
    b'{"step": 10, "val_loss"\n',  # cut, then a newline
    b"[1, 2, 3]\n",  # JSON, but not a row
    b'{"step": "ten", "val_loss": 1}\n',  # a row whose step is not a number
    b"\n",  # an empty line
])
def test_a_damaged_line_anywhere_is_skipped(tmp_path, bad):
    path = write_rows(tmp_path / "t.jsonl", line(row(0)), bad, line(row(10)))
    read = read_row_file(path)
    assert read.damaged == [2]
    assert [r["step"] for r in read.rows] == [0, 10]


def test_a_cut_last_line_is_skipped_and_counted(tmp_path):
    read = read_row_file(write_rows(tmp_path / "t.jsonl", line(row(0)), CUT))
    assert read.damaged == [2] and [r["step"] for r in read.rows] == [0]


def test_a_retried_trial_never_appends_after_a_cut_line(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", line(row(0)), line(row(10)), CUT)
    log = RowLog(path)
    log.append(row(10, 0.6))  # the retry, from its checkpoint at step 10
    log.append(row(20, 0.7))
    log.close()
    read = read_row_file(path)
    assert read.damaged == []  # the cut line was cut back, not continued
    assert [(r["step"], r["objective"]) for r in read.rows] == [(0, 0.5), (10, 0.6), (20, 0.7)]
    assert path.read_bytes() == line(row(0)) + line(row(10)) + line(row(10, 0.6)) + \
        line(row(20, 0.7))


def test_a_file_that_is_one_cut_line_is_emptied_before_appending(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", CUT)
    log = RowLog(path)
    log.append(row(0))
    log.close()
    assert path.read_bytes() == line(row(0))


def damaged_run(tmp_path):
    """A finished run whose history table is gone (so the rows are read from trial_rows/),
    each trial's row file damaged once."""
    run_dir = finished_run(tmp_path)
    for suffix in (".parquet", ".csv"):
        (run_dir / f"history{suffix}").unlink()
    rows = run_dir / TRIAL_ROWS
    write_rows(rows / "t0.jsonl", line(row(0)), CUT + line(row(10, 0.8)), line(row(20, 0.8)))
    write_rows(rows / "t1.jsonl", line(row(0)), b"\xff\xfe\x80\n", line(row(10, 0.7)))
    return run_dir


def test_merged_history_says_the_damage_once_in_one_line(tmp_path, caplog):
    run_dir = damaged_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lbt_study"):
        history = merged_history(run_dir, ["t0", "t1"])
        merged_history(run_dir, ["t0", "t1"])  # read again: not said again
    assert history.groupby("trial_id")["step"].apply(list).to_dict() == \
        {"t0": [0, 20], "t1": [0, 10]}
    said = [r.getMessage() for r in caplog.records if r.name.startswith("lbt_study")]
    assert len(said) == 1, said
    assert said[0].startswith("skipped 2 damaged lines (cut, undecodable or not a row) in 2 "
                              "row files of "), said[0]
    assert "t0.jsonl line 2; t1.jsonl line 2" in said[0]


def test_read_rows_says_a_files_damage(tmp_path, caplog):
    path = write_rows(tmp_path / "t9.jsonl", line(row(0)), b"\xff\n")
    with caplog.at_level(logging.WARNING, logger="lbt_study"):
        assert [r["step"] for r in read_rows(path)] == [0]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("lbt_study")] == [
        f"skipped 1 damaged line (cut, undecodable or not a row) in 1 row file of "
        f"{tmp_path}: t9.jsonl line 2"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lbt_study.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [["results"], ["report"]])
def test_results_and_report_of_damaged_row_files(tmp_path, command):
    run_dir = damaged_run(tmp_path)
    proc = cli(*command, run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # said once, though the report reads the rows twice
    assert lines[0].startswith("lbt-study: warning: skipped 2 damaged lines"), lines[0]
    print(lines[0])
    if command == ["results"]:
        assert proc.stdout.startswith("2 trials (ok 2), 4 evaluations"), proc.stdout
    else:
        assert (run_dir / "report" / "report.html").is_file()
