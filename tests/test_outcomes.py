"""What Optuna is told for a trials-table row: one function, for the runner and resume alike."""

import math

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from lbt_study.records.schema import STATUSES
from lbt_study.study.outcomes import OK, PRUNED, optuna_outcome

INF, NAN = math.inf, math.nan


def test_the_outcome_names_are_statuses():
    assert {OK, PRUNED} <= set(STATUSES)


@pytest.mark.parametrize("record,multi,expected", [
    ({"status": "ok", "final_objective": 0.9}, False, (TrialState.COMPLETE, [0.9])),
    ({"status": "ok", "final_objective": 0.9, "seconds_to_target": 12.5}, True,
     (TrialState.COMPLETE, [0.9, 12.5])),
    # never reached the target: infinitely slow, still on the objective axis
    ({"status": "ok", "final_objective": 0.9, "seconds_to_target": NAN}, True,
     (TrialState.COMPLETE, [0.9, INF])),
    ({"status": "ok", "final_objective": 0.9, "seconds_to_target": None}, True,
     (TrialState.COMPLETE, [0.9, INF])),
    ({"status": "ok", "final_objective": 0.9}, True, (TrialState.COMPLETE, [0.9, INF])),
    ({"status": "ok", "final_objective": 2}, False, (TrialState.COMPLETE, [2.0])),
    # ok without a usable objective: never COMPLETE with a made-up value
    ({"status": "ok", "final_objective": NAN}, False, (TrialState.FAIL, None)),
    ({"status": "ok", "final_objective": INF}, True, (TrialState.FAIL, None)),
    ({"status": "ok", "final_objective": None}, False, (TrialState.FAIL, None)),
    ({"status": "ok"}, False, (TrialState.FAIL, None)),
    ({"status": "ok", "final_objective": "0.9"}, False, (TrialState.FAIL, None)),
    ({"status": "ok", "final_objective": True}, False, (TrialState.FAIL, None)),
    ({"status": "pruned", "final_objective": 0.5}, False, (TrialState.PRUNED, None)),
    ({"status": "pruned", "final_objective": 0.5}, True, (TrialState.PRUNED, None)),
    ({"status": "diverged", "final_objective": NAN}, False, (TrialState.FAIL, None)),
    ({"status": "oom", "final_objective": 0.3}, True, (TrialState.FAIL, None)),
    ({"status": "failed", "final_objective": 0.3}, False, (TrialState.FAIL, None)),
    ({"status": "mystery", "final_objective": 0.3}, False, (TrialState.FAIL, None)),
    ({}, False, (TrialState.FAIL, None)),
])
def test_outcome_of_a_record(record, multi, expected):
    assert optuna_outcome(record, multi) == expected


def test_every_status_has_an_outcome():
    states = {s: optuna_outcome({"status": s, "final_objective": 0.5}, False)[0]
              for s in STATUSES}
    assert states == {"ok": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                      "diverged": TrialState.FAIL, "oom": TrialState.FAIL,
                      "failed": TrialState.FAIL}


def test_a_row_read_back_from_the_table():
    """Rows come back from Parquet/CSV as pandas Series of numpy scalars."""
    table = pd.DataFrame({"status": ["ok", "ok", "pruned"],
                          "final_objective": np.array([0.75, 0.5, 0.25], dtype=np.float32),
                          "seconds_to_target": [3.0, np.nan, np.nan]})
    outcomes = [optuna_outcome(row, True) for _, row in table.iterrows()]
    assert outcomes == [(TrialState.COMPLETE, [0.75, 3.0]), (TrialState.COMPLETE, [0.5, INF]),
                        (TrialState.PRUNED, None)]
    state, values = optuna_outcome(table.iloc[0], False)
    assert state == TrialState.COMPLETE and values == [0.75]
    assert all(type(v) is float for v in values)
    na = pd.Series({"status": "ok", "final_objective": pd.NA})
    assert optuna_outcome(na, False) == (TrialState.FAIL, None)
