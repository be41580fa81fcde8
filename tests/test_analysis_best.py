"""best_per_batch_size, gap_by_norm and pareto_front on literal trials tables, answers by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lbt_study.analysis import CannotCompute, best_per_batch_size, gap_by_norm, pareto_front

NAN = math.nan


def trials() -> pd.DataFrame:
    """Eight trials at three batch sizes.

    t2 and t3 tie at 0.90 at batch size 32; t4 is the best at 64 but diverged; t6 has no
    objective; t8 ran out of memory, so batch size 128 has no ok trial.
    """
    return pd.DataFrame({
        "trial_id": ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"],
        "status": ["ok", "ok", "ok", "diverged", "ok", "ok", "ok", "oom"],
        "batch_size": [32, 32, 32, 64, 64, 64, 64, 128],
        "norm": ["batch", "layer", "batch", "batch", "batch", "layer", "group", "batch"],
        "learning_rate": [0.1, 0.2, 0.4, 0.8, 0.3, 0.6, 0.5, 1.0],
        "final_objective": [0.80, 0.90, 0.90, 0.99, 0.70, NAN, 0.60, NAN],
        "final_gap_accuracy": [0.02, 0.05, 0.04, 0.10, 0.06, 0.07, NAN, NAN],
    })


def picked(frame: pd.DataFrame) -> list:
    return [None if pd.isna(t) else t for t in frame["trial_id"]]


def test_best_maximize_takes_the_highest_and_the_first_of_a_tie():
    best = best_per_batch_size(trials(), "maximize")
    assert list(best["batch_size"]) == [32, 64, 128]
    assert picked(best) == ["t2", "t5", None]  # t2 before t3 in the table; t4 diverged
    assert list(best["n_candidates"]) == [3, 2, 0]  # t6 has no objective
    assert best["learning_rate"].iloc[0] == 0.2  # every trial column comes along
    assert best["reason"].iloc[:2].isna().all()
    assert "none of the 1 trials" in best["reason"].iloc[2]
    assert math.isnan(best["final_objective"].iloc[2])


def test_best_minimize_takes_the_lowest():
    best = best_per_batch_size(trials(), "minimize")
    assert picked(best) == ["t1", "t7", None]


def test_best_tie_goes_to_table_order():
    reversed_table = trials().iloc[::-1].reset_index(drop=True)
    assert picked(best_per_batch_size(reversed_table, "maximize"))[0] == "t3"


def test_best_per_batch_size_and_norm():
    best = best_per_batch_size(trials(), "maximize", by=("batch_size", "norm"))
    keys = list(zip(best["batch_size"], best["norm"], strict=True))
    assert keys == [(32, "batch"), (32, "layer"), (64, "batch"), (64, "group"),
                    (64, "layer"), (128, "batch")]
    assert picked(best) == ["t3", "t2", "t5", "t7", None, None]


def test_best_with_every_status_competing():
    best = best_per_batch_size(trials(), "maximize", statuses=None)
    assert picked(best) == ["t2", "t4", None]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"direction": "max"}, "'maximize', 'minimize', not 'max'"),
    ({"direction": "maximize", "metric": "accuracy"}, "has no accuracy column"),
    ({"direction": "maximize", "statuses": ("OK",)}, "unknown status 'OK'; known: ok"),
    ({"direction": "maximize", "by": ()}, "by must name at least one column"),
])
def test_best_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        best_per_batch_size(trials(), **kwargs)


def test_gap_by_norm():
    got = gap_by_norm(trials(), "maximize")
    expected = pd.DataFrame({
        "norm": ["batch", "batch", "batch", "group", "layer", "layer"],
        "batch_size": [32, 64, 128, 64, 32, 64],
        "trial_id": ["t3", "t5", NAN, "t7", "t2", NAN],
        "gap_of_best": [0.04, 0.06, NAN, NAN, 0.05, NAN],
        "gap_median": [0.03, 0.06, NAN, NAN, 0.05, 0.07],  # ok trials with a gap value
        "n_trials": [2, 1, 0, 0, 1, 1],
    })
    assert_frame_equal(got.drop(columns="reason"), expected, check_dtype=False)
    reasons = got["reason"]
    assert reasons[[0, 1, 4]].isna().all()
    assert "none of the 1 trials" in reasons[2]
    assert reasons[3] == "the best trial t7 has no final_gap_accuracy value"
    assert "none of the 1 trials" in reasons[5]


def test_gap_by_norm_needs_the_gap_column():
    with pytest.raises(CannotCompute, match="has no final_gap_loss column"):
        gap_by_norm(trials(), "maximize", gap_col="final_gap_loss")


def pareto_trials() -> pd.DataFrame:
    """p2 and p3 are equal; p5 is dominated by p2, p6 by p1; p7 has NaN; p8 diverged."""
    return pd.DataFrame({
        "trial_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"],
        "status": ["ok"] * 7 + ["diverged", "ok"],
        "final_objective": [0.90, 0.85, 0.85, 0.95, 0.80, 0.90, 0.99, 0.99, 0.70],
        "seconds_to_target": [100, 60, 60, 200, 80, 150, NAN, 10, 50],
    })


def test_pareto_front_by_hand():
    got = pareto_front(pareto_trials())
    front = got[got["on_front"]]
    # best-first on the first objective, equal points both kept, in table order
    assert list(front["trial_id"]) == ["p4", "p1", "p2", "p3", "p9"]
    assert set(got.loc[~got["on_front"], "trial_id"]) == {"p5", "p6", "p7", "p8"}
    assert len(got) == 9
    reason = got.set_index("trial_id")["reason"]
    assert reason[["p1", "p2", "p5", "p6"]].isna().all()  # compared, dominated or not
    assert reason["p7"] == "no seconds_to_target value"
    assert reason["p8"] == "status diverged is not one of ('ok',)"


def test_pareto_front_with_other_directions_and_three_objectives():
    table = pareto_trials().assign(cost=[1, 1, 2, 1, 1, 1, 1, 1, 1])
    got = pareto_front(table, [("final_objective", "maximize"),
                               ("seconds_to_target", "minimize"), ("cost", "minimize")])
    # p3 now costs more than its twin p2, so p2 dominates it
    assert list(got.loc[got["on_front"], "trial_id"]) == ["p4", "p1", "p2", "p9"]
    worst = pareto_front(pareto_trials(), [("final_objective", "minimize")], statuses=None)
    assert list(worst.loc[worst["on_front"], "trial_id"]) == ["p9"]


def test_pareto_front_on_nothing_competing():
    table = pareto_trials().assign(status="failed")
    got = pareto_front(table)
    assert not got["on_front"].any()
    assert got["reason"].str.startswith("status failed").all()


@pytest.mark.parametrize(("objectives", "message"), [
    ([("final_objective", "up")], "direction of 'final_objective'"),
    ([("accuracy", "maximize")], "has no accuracy column"),
    ([], "at least one"),
])
def test_pareto_front_rejects_bad_objectives(objectives, message):
    with pytest.raises(ValueError, match=message):
        pareto_front(pareto_trials(), objectives)


def test_pareto_front_matches_a_brute_force_on_random_points_with_ties():
    rng = np.random.default_rng(3)
    table = pd.DataFrame({
        "trial_id": [f"r{i}" for i in range(40)], "status": "ok",
        "a": rng.integers(0, 5, 40).astype(float), "b": rng.integers(0, 5, 40).astype(float),
        "c": rng.integers(0, 3, 40).astype(float),
    })
    table.loc[[3, 17], "b"] = NAN
    objectives = [("a", "maximize"), ("b", "minimize"), ("c", "maximize")]
    got = pareto_front(table, objectives)
    points = {r.trial_id: (r.a, -r.b, r.c) for r in table.itertuples() if not math.isnan(r.b)}

    def dominates(p, q):
        return all(x >= y for x, y in zip(p, q, strict=True)) and p != q

    expected = {t for t, p in points.items() if not any(dominates(q, p) for q in points.values())}
    assert set(got.loc[got["on_front"], "trial_id"]) == expected
    firsts = got.loc[got["on_front"], "a"].tolist()
    assert firsts == sorted(firsts, reverse=True)
