"""ResultsWriter: tables written as trials finish, the history in parts between rewrites."""

import pandas as pd

from lbt_study.results import ResultsWriter, load_results
from lbt_study.rundir import HISTORY_PARTS


def _trial(tid, steps):
    rec = {"trial_id": tid, "status": "ok", "batch_size": 32, "final_objective": 0.5}
    history = [{"trial_id": tid, "step": s, "val_loss": 1.0 / (s + 1), "objective": 0.1 * s}
               for s in steps]
    return rec, history


def test_every_finished_trial_is_readable_with_its_history_between_rewrites(tmp_path):
    writer = ResultsWriter(tmp_path, history_every_s=3600)  # one rewrite: the first trial
    for tid, steps in (("a", [0, 5]), ("b", [0, 5, 10]), ("c", [0])):
        writer.add_trial(*_trial(tid, steps))
        trials, history = load_results(tmp_path)
        assert list(trials["trial_id"]) == list("abc"[: len(trials)])
        # each trial's history, in the trials' order, whether in the table or still a part
        assert history.groupby("trial_id", sort=False).size().to_dict() == \
            {t: n for t, n in zip("abc", (2, 3, 1), strict=False) if t in set(trials.trial_id)}
    assert sorted(p.stem for p in (tmp_path / HISTORY_PARTS).glob("*.parquet")) == ["b", "c"]
    on_disk = pd.read_parquet(tmp_path / "history.parquet")
    assert set(on_disk["trial_id"]) == {"a"}  # the whole table was written once

    writer.flush()
    assert list((tmp_path / HISTORY_PARTS).glob("*.parquet")) == []
    trials, history = load_results(tmp_path)
    assert list(history["trial_id"]) == ["a"] * 2 + ["b"] * 3 + ["c"]
    assert list(history["step"]) == [0, 5, 0, 5, 10, 0]


def test_resume_starts_from_the_table_and_the_parts(tmp_path):
    first = ResultsWriter(tmp_path, history_every_s=3600)
    first.add_trial(*_trial("a", [0, 5]))
    first.add_trial(*_trial("b", [0]))  # a part only: the driver "dies" here
    again = ResultsWriter(tmp_path, keep_existing=True)
    again.add_trial(*_trial("c", [0, 5]))
    again.flush()
    trials, history = load_results(tmp_path)
    assert list(trials["trial_id"]) == ["a", "b", "c"]
    assert list(history["trial_id"]) == ["a", "a", "b", "c", "c"]
