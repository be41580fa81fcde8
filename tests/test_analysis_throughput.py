"""throughput_frontier on a literal table whose efficiencies are worked out by hand."""

import math

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lbt_study.analysis import CannotCompute, throughput_frontier

NAN = math.nan


def trials() -> pd.DataFrame:
    return pd.DataFrame({
        "trial_id": list("abcdefghi"),
        "status": ["ok", "ok", "ok", "ok", "pruned", "ok", "ok", "ok", "failed"],
        "batch_size": [64, 64, 64, 64, 128, 128, 128, 256, 256],
        "workers": [1, 1, 2, 4, 1, 1, 4, 2, 1],
        "throughput": [1000.0, 900.0, 1800.0, 3000.0, 1500.0, 1400.0, 5000.0, 3200.0, NAN],
    })


def test_throughput_frontier_by_hand():
    got = throughput_frontier(trials())
    expected = pd.DataFrame({
        "batch_size": [64, 64, 64, 128, 128, 256, 256],
        "workers": [1, 2, 4, 1, 4, 1, 2],
        "trial_id": ["a", "c", "d", "e", "g", NAN, "h"],  # e: a pruned trial's speed counts
        "throughput": [1000.0, 1800.0, 3000.0, 1500.0, 5000.0, NAN, 3200.0],
        "n_trials": [2, 1, 1, 2, 1, 0, 1],
        # throughput(B, w) / (w * throughput(B, 1))
        "efficiency_workers": [1.0, 1800 / 2000, 3000 / 4000, 1.0, 5000 / 6000, NAN, NAN],
        # throughput(B, w) / throughput(smallest B measured on w workers, w)
        "speedup_vs_smallest_batch": [1.0, 1.0, 1.0, 1.5, 5000 / 3000, NAN, 3200 / 1800],
    })
    assert_frame_equal(got.drop(columns="reason"), expected, check_dtype=False)
    reason = got["reason"]
    assert reason[:5].isna().all()
    assert reason[5] == "no trial with status in ('ok', 'pruned') and a throughput > 0"
    assert reason[6] == "no 1-worker throughput at batch_size 256: no worker-scaling efficiency"


def test_throughput_frontier_ok_only():
    got = throughput_frontier(trials(), statuses=("ok",))
    row = got[(got["batch_size"] == 128) & (got["workers"] == 1)].iloc[0]
    assert (row["trial_id"], row["throughput"]) == ("f", 1400.0)
    assert got.loc[got["batch_size"] == 128, "efficiency_workers"].iloc[1] == pytest.approx(
        5000 / 5600)


def test_throughput_frontier_needs_its_columns():
    with pytest.raises(CannotCompute, match="has no workers column; columns present: "):
        throughput_frontier(trials().drop(columns="workers"))
