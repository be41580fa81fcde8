"""ResultsWriter and the trials' own row files: every finished trial readable with its
history, the driver holding none of it; the row files as a kill leaves them."""

import json
import threading

import pandas as pd

from lbt_study.records.results import ResultsWriter, load_results, write_table
from lbt_study.records.rowlog import RowLog, read_rows
from lbt_study.records.rundir import read_table, trial_rows_path


def _trial(run_dir, tid, steps):
    """A trial as the trial side leaves it: its rows in its file; its trials-table row."""
    log = RowLog(trial_rows_path(run_dir, tid))
    for s in steps:
        log.append({"step": s, "status": "running", "val_loss": 1.0 / (s + 1),
                    "objective": 0.1 * s, "config_as_run": "{}"})
    log.close()
    return {"trial_id": tid, "status": "ok", "batch_size": 32, "final_objective": 0.5}


def test_every_finished_trial_is_readable_with_its_history_between_rewrites(tmp_path):
    writer = ResultsWriter(tmp_path, history_every_s=3600)  # one rewrite: the first trial
    for tid, steps in (("a", [0, 5]), ("b", [0, 5, 10]), ("c", [0])):
        writer.add_trial(_trial(tmp_path, tid, steps))
        trials, history = load_results(tmp_path)
        assert list(trials["trial_id"]) == list("abc"[: len(trials)])
        # each trial's history, in the trials' order, whether in the table or its own file
        assert history.groupby("trial_id", sort=False).size().to_dict() == \
            {t: n for t, n in zip("abc", (2, 3, 1), strict=False) if t in set(trials.trial_id)}
        assert "config_as_run" not in history.columns  # a trial-level key stays out
    on_disk = pd.read_parquet(tmp_path / "history.parquet")
    assert set(on_disk["trial_id"]) == {"a"}  # the whole table was written once
    assert not hasattr(writer, "history")  # the driver holds no history

    writer.flush()
    on_disk = pd.read_parquet(tmp_path / "history.parquet")
    assert list(on_disk["trial_id"]) == ["a"] * 2 + ["b"] * 3 + ["c"]
    assert list(on_disk["step"]) == [0, 5, 0, 5, 10, 0]
    trials, history = load_results(tmp_path)
    assert list(history["step"]) == [0, 5, 0, 5, 10, 0]  # nothing merged twice


def test_resume_starts_from_the_tables_and_the_row_files(tmp_path):
    first = ResultsWriter(tmp_path, history_every_s=3600)
    first.add_trial(_trial(tmp_path, "a", [0, 5]))
    first.add_trial(_trial(tmp_path, "b", [0]))  # not in the history table: the driver "dies"
    again = ResultsWriter(tmp_path, keep_existing=True)
    assert [t["trial_id"] for t in again.trials] == ["a", "b"]
    again.add_trial(_trial(tmp_path, "c", [0, 5]))
    again.flush()
    trials, history = load_results(tmp_path)
    assert list(trials["trial_id"]) == ["a", "b", "c"]
    assert list(history["trial_id"]) == ["a", "a", "b", "c", "c"]


def test_a_restarted_trial_keeps_its_latest_attempt_at_every_step(tmp_path):
    path = tmp_path / "t.jsonl"
    log = RowLog(path)
    for step in (0, 5, 10, 15):  # the first attempt dies after step 15
        log.append({"step": step, "val_loss": 1.0, "attempt": 1})
    for step in (10, 15, 20):  # restarted from its checkpoint at step 10
        log.append({"step": step, "val_loss": 1.0, "attempt": 2})
    log.append({"step": 20, "status": "failed", "attempt": 2})  # then failed there
    log.close()
    rows = read_rows(path)
    assert [(r["step"], r["attempt"]) for r in rows] == \
        [(0, 1), (5, 1), (10, 2), (15, 2), (20, 2), (20, 2)]
    assert rows[-2]["val_loss"] == 1.0 and rows[-1]["status"] == "failed"


def test_a_line_cut_by_a_kill_is_skipped_and_the_rows_before_it_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    whole = [json.dumps({"step": s, "val_loss": 1.0}) for s in (0, 5)]
    path.write_text("\n".join(whole) + "\n" + json.dumps({"step": 10})[:7])
    assert [r["step"] for r in read_rows(path)] == [0, 5]
    assert read_rows(tmp_path / "never-written.jsonl") == []


def test_a_table_read_while_the_study_rewrites_it_is_one_whole_version(tmp_path):
    """pyarrow opens a path more than once; a table replaced between the opens paired one
    file's footer with another's pages (CI: 'Page was smaller (0) than expected (12)')."""

    def table(n):
        return pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "status": "ok",
                             "x": range(n)})

    write_table(table(1), tmp_path, "trials")
    done = threading.Event()

    def rewrite():
        n = 1
        while not done.is_set():
            n = n % 40 + 1
            write_table(table(n), tmp_path, "trials")

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(300):
            got = read_table(tmp_path, "trials")
            assert list(got["x"]) == list(range(len(got)))
    finally:
        done.set()
        writer.join()
