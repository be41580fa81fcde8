"""time_to_target and friends on literal history tables whose answers are worked out by hand:
the crossing is the first evaluation reaching the target with the next one reaching it too,
placed by linear interpolation of the objective in log steps (linear in steps from step 0)
between it and the miss before it; the other at-target columns linear in steps there."""

import math
import time

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal

from lbt_study.analysis import final_and_at_target_gap, reached, time_to_target

NAN = math.nan

MEASURED = [
    "steps_to_target", "examples_to_target", "seconds_to_target", "epoch_to_target",
    "gap_accuracy_at_target", "gap_loss_at_target", "value_at_target", "eval_step_at_target",
]


def history() -> pd.DataFrame:
    """Two trials, batch size 32, evaluated every 10 steps (step 0 = before training).

    Trial "a" first reaches objective 0.9 at its third evaluation (step 20). Trial "b" never
    does; its step-20 evaluation produced NaN.
    """
    return pd.DataFrame({
        "trial_id": ["a"] * 4 + ["b"] * 4,
        "step": [0, 10, 20, 30] * 2,
        "examples_seen": [0, 320, 640, 960] * 2,
        "epoch": [0.0, 0.5, 1.0, 1.5] * 2,
        "train_seconds": [0.0, 0.7, 1.5, 2.2, 0.0, 0.8, 1.6, 2.4],
        "lr": [0.1] * 8,
        "val_loss": [2.3, 0.9, 0.3, 0.25, 2.3, 1.2, NAN, 0.6],
        "gap_loss": [0.0, 0.05, 0.1, 0.12, 0.0, 0.02, NAN, 0.07],
        "gap_accuracy": [0.0, 0.01, 0.03, 0.04, 0.0, 0.02, NAN, 0.05],
        "objective": [0.1, 0.6, 0.92, 0.95, 0.1, 0.5, NAN, 0.8],
    })


def expected(rows: dict[str, list]) -> pd.DataFrame:
    """A time_to_target answer: trial_id, reached, then the measured columns in order."""
    frame = pd.DataFrame({"trial_id": rows["trial_id"], "reached": rows["reached"]})
    for name in MEASURED:
        frame[name] = pd.Series(rows[name], dtype="float64")
    return frame


NEVER = [NAN] * 8  # the measured columns of a trial that never reached the target


def row(step, examples, seconds, epoch, gap_acc, gap_loss, value, eval_step):
    return [step, examples, seconds, epoch, gap_acc, gap_loss, value, eval_step]


def in_logs(s0, s1, v0, v1, target):
    """Worked by hand: the step where log-linear interpolation of v between (s0, v0) and
    (s1, v1) meets the target, and the fraction of the way from s0 to s1 it lies (in steps)."""
    step = s0 * (s1 / s0) ** ((target - v0) / (v1 - v0))
    return step, (step - s0) / (s1 - s0)


def a_at(target, w):
    """Trial a's at-target columns a fraction w of the way from step 10 to 20."""
    return row(10 + 10 * w, 320 + 320 * w, 0.7 + 0.8 * w, 0.5 + 0.5 * w, 0.01 + 0.02 * w,
               0.05 + 0.05 * w, 0.92, 20)


def table(*trials):
    """expected() from (trial_id, reached, measured-values) triples."""
    rows = {"trial_id": [t[0] for t in trials], "reached": [t[1] for t in trials]}
    for i, name in enumerate(MEASURED):
        rows[name] = [t[2][i] for t in trials]
    return expected(rows)


def test_reached_maximize_minimize_and_nan():
    values = pd.Series([0.5, NAN, 0.9, 1.0], index=[3, 1, 4, 1])
    assert reached(values, 0.9, "maximize").tolist() == [False, False, True, True]
    assert reached(values, 0.9, "minimize").tolist() == [True, False, True, False]
    assert reached(values, 0.9, "maximize").index.tolist() == [3, 1, 4, 1]


def test_reached_nullable_na_is_not_reached():
    values = pd.Series([0.95, None, 0.5], dtype="Float64")
    assert_series_equal(reached(values, 0.9, "maximize"), pd.Series([True, False, False]))


def test_maximize_one_reaches_at_third_evaluation_other_never():
    got = time_to_target(history(), 0.9, "maximize")
    step, w = in_logs(10, 20, 0.6, 0.92, 0.9)  # 10 * 2^(0.3/0.32) = 19.15
    assert step == pytest.approx(19.152, abs=1e-3)
    want = table(("a", True, a_at(0.9, w)), ("b", False, NEVER))
    assert_frame_equal(got, want)


def test_minimize_val_loss():
    got = time_to_target(history(), 0.5, "minimize", metric="val_loss")
    step, w = in_logs(10, 20, 0.9, 0.3, 0.5)
    want = table(("a", True, row(step, 320 + 320 * w, 0.7 + 0.8 * w, 0.5 + 0.5 * w,
                                 0.01 + 0.02 * w, 0.05 + 0.05 * w, 0.3, 20)),
                 ("b", False, NEVER))
    assert_frame_equal(got, want)


def test_nan_evaluations_are_skipped():
    # b: 0.5 at step 10 < 0.7, NaN at step 20 skipped, 0.8 at step 30 reaches (its last)
    got = time_to_target(history(), 0.7, "maximize")
    step_a, wa = in_logs(10, 20, 0.6, 0.92, 0.7)
    step_b, wb = in_logs(10, 30, 0.5, 0.8, 0.7)  # 10 * 3^(2/3)
    want = table(
        ("a", True, a_at(0.7, wa)),
        ("b", True, row(step_b, 320 + 640 * wb, 0.8 + 1.6 * wb, 0.5 + 1.0 * wb,
                        0.02 + 0.03 * wb, 0.02 + 0.05 * wb, 0.8, 30)),
    )
    assert_frame_equal(got, want)
    # minimize: a from step 0 (linear in steps: 1.3/1.4 of 10); b's NaN at 20 skipped
    got = time_to_target(history(), 1.0, "minimize", metric="val_loss")
    assert got["steps_to_target"].tolist() == pytest.approx(
        [10 * 1.3 / 1.4, in_logs(10, 30, 1.2, 0.6, 1.0)[0]])


def test_target_met_at_step_zero_counts():
    got = time_to_target(history(), 0.1, "maximize")
    at_zero = row(0, 0, 0.0, 0.0, 0.0, 0.0, 0.1, 0)
    assert_frame_equal(got, table(("a", True, at_zero), ("b", True, at_zero)))


def test_both_crossing_rules_give_their_known_answer_on_a_noisy_history():
    """0.91 at step 10 falls back to 0.85 before the curve stays above 0.9 from step 30."""
    hist = pd.DataFrame({"trial_id": "n", "step": [0, 10, 20, 30, 40],
                         "examples_seen": [0, 10, 20, 30, 40],
                         "objective": [0.1, 0.91, 0.85, 0.92, 0.95]})
    # first (the default, Shallue et al.'s steps to result): the first touch, from step 0
    # linearly: 0.8/0.81 of 10 steps
    for got in (time_to_target(hist, 0.9, "maximize"),
                time_to_target(hist, 0.9, "maximize", crossing="first")):
        assert got.loc[0, "steps_to_target"] == pytest.approx(10 * 0.8 / 0.81)
        assert got.loc[0, "eval_step_at_target"] == 10
    # confirmed: the touch that falls back does not count; between steps 20 and 30
    got = time_to_target(hist, 0.9, "maximize", crossing="confirmed")
    assert got.loc[0, "steps_to_target"] == pytest.approx(in_logs(20, 30, 0.85, 0.92, 0.9)[0])
    assert got.loc[0, "eval_step_at_target"] == 30
    # a trial's last evaluation needs no successor
    got = time_to_target(hist.iloc[:4], 0.92, "maximize", crossing="confirmed")
    assert got.loc[0, "steps_to_target"] == 30 and got.loc[0, "reached"]
    with pytest.raises(ValueError, match="target_crossing must be one of 'first', 'confirmed'"):
        time_to_target(hist, 0.9, "maximize", crossing="second")


def test_interpolation_on_a_geometric_schedule_resolves_a_smooth_curve():
    """objective = 1 - exp(-step / tau) crosses 0.9 at tau ln 10; evaluations 4 per doubling:
    the first evaluation past it is up to 19% late, the interpolated crossing within 2%."""
    from lbt_study.train.batching import geometric_eval_steps

    for tau in (7.3, 41.0, 133.0):
        marks = np.array(sorted(geometric_eval_steps(list(range(0, 2001)), 4)))
        hist = pd.DataFrame({"trial_id": "s", "step": marks, "examples_seen": marks,
                             "objective": 1 - np.exp(-marks / tau)})
        got = time_to_target(hist, 0.9, "maximize").loc[0]
        truth = tau * math.log(10)
        assert got["steps_to_target"] == pytest.approx(truth, rel=0.02)
        assert got["eval_step_at_target"] >= truth


def test_missing_optional_columns_give_nan():
    hist = history().drop(columns=["gap_accuracy", "gap_loss", "epoch", "train_seconds"])
    got = time_to_target(hist, 0.9, "maximize")
    step, w = in_logs(10, 20, 0.6, 0.92, 0.9)
    want = table(("a", True, row(step, 320 + 320 * w, NAN, NAN, NAN, NAN, 0.92, 20)),
                 ("b", False, NEVER))
    assert_frame_equal(got, want)


def test_trial_order_is_first_appearance_even_when_rows_interleave():
    hist = history()
    hist["trial_id"] = ["z"] * 4 + ["m"] * 4
    # interleave: z0 m0 z10 m10 ...; each trial's rows stay in step order
    hist = hist.iloc[[0, 4, 1, 5, 2, 6, 3, 7]].reset_index(drop=True)
    late = hist.iloc[[0]].assign(trial_id="c", objective=0.99)  # a third trial, appears last
    hist = pd.concat([hist, late], ignore_index=True)
    got = time_to_target(hist, 0.9, "maximize")
    assert got["trial_id"].tolist() == ["z", "m", "c"]
    assert got["reached"].tolist() == [True, False, True]
    assert got["steps_to_target"].tolist()[0::2] == pytest.approx(
        [in_logs(10, 20, 0.6, 0.92, 0.9)[0], 0.0])
    assert list(got.index) == [0, 1, 2]


def test_empty_history_gives_empty_table_with_columns():
    got = time_to_target(history().iloc[:0], 0.9, "maximize")
    assert list(got.columns) == ["trial_id", "reached", *MEASURED]
    assert len(got) == 0


def test_bad_direction_raises():
    with pytest.raises(ValueError, match=r"'maximize', 'minimize', not 'max'"):
        time_to_target(history(), 0.9, "max")
    with pytest.raises(ValueError, match=r"not 'Minimize'"):
        reached(pd.Series([1.0]), 0.9, "Minimize")


@pytest.mark.parametrize("missing", ["trial_id", "step", "examples_seen", "objective"])
def test_missing_required_column_raises(missing):
    hist = history().drop(columns=[missing])
    with pytest.raises(ValueError) as info:
        time_to_target(hist, 0.9, "maximize")
    message = str(info.value)
    assert f"no column {missing!r}" in message
    assert "columns present: " + ", ".join(hist.columns) in message


def test_missing_metric_column_raises():
    with pytest.raises(ValueError, match=r"no column 'val_error'.*columns present: trial_id, step"):
        time_to_target(history(), 0.1, "minimize", metric="val_error")


W = in_logs(10, 20, 0.6, 0.92, 0.9)[1]  # where trial a crosses 0.9


def test_final_and_at_target_gap():
    got = final_and_at_target_gap(history(), 0.9, "maximize")
    want = pd.DataFrame({
        "trial_id": ["a", "b"],
        "gap_accuracy_final": [0.04, 0.05],
        "gap_loss_final": [0.12, 0.07],
        "gap_accuracy_at_target": [0.01 + 0.02 * W, NAN],
        "gap_loss_at_target": [0.05 + 0.05 * W, NAN],
    })
    assert_frame_equal(got, want)


def test_final_gap_is_last_evaluation_even_if_nan_and_missing_columns_are_nan():
    hist = history()
    hist.loc[7, "gap_accuracy"] = NAN  # b's last evaluation has no accuracy gap
    got = final_and_at_target_gap(hist, 0.9, "maximize")
    assert math.isnan(got.loc[1, "gap_accuracy_final"])  # not 0.02 from an earlier evaluation
    got = final_and_at_target_gap(hist.drop(columns=["gap_accuracy"]), 0.9, "maximize")
    assert got["gap_accuracy_final"].isna().all() and got["gap_accuracy_at_target"].isna().all()
    assert got["gap_loss_final"].tolist() == [0.12, 0.07]


def synthetic_history(trials: int = 1000, evals: int = 100) -> pd.DataFrame:
    """trials x evals rows, all trials' step 0 first, then step 10, ... (interleaved)."""
    rng = np.random.default_rng(0)
    steps = np.arange(evals) * 10
    batch = rng.choice([32, 64, 128, 256], size=trials)
    noise = rng.normal(0.0, 0.05, size=(evals, trials))
    rate = rng.uniform(0.0005, 0.01, size=trials)
    objective = 1.0 - np.exp(-rate[None, :] * steps[:, None]) + noise
    objective[rng.random(objective.shape) < 0.05] = np.nan
    step = np.repeat(steps, trials)
    return pd.DataFrame({
        "trial_id": np.tile([f"t{i:04d}" for i in range(trials)], evals),
        "step": step,
        "examples_seen": step * np.tile(batch, evals),
        "epoch": step * np.tile(batch, evals) / 50_000,
        "train_seconds": step * 0.01 + rng.uniform(0, 0.001, size=trials * evals),
        "gap_accuracy": rng.normal(0.02, 0.01, size=trials * evals),
        "gap_loss": rng.normal(0.1, 0.02, size=trials * evals),
        "objective": objective.ravel(),
    })


def reference(hist: pd.DataFrame, trial_id: str, target: float) -> dict | None:
    """A plain loop over one trial's scored rows in step order: the first that reaches the
    target with its successor (or is last), and the log-interpolated step from the miss
    before it."""
    recs = [r for r in hist[hist["trial_id"] == trial_id].sort_values("step").to_dict("records")
            if not math.isnan(r["objective"])]
    for i, rec in enumerate(recs):
        nxt = recs[i + 1]["objective"] >= target if i + 1 < len(recs) else True
        if rec["objective"] >= target and nxt:
            if i == 0:
                return {**rec, "crossing": rec["step"]}
            s0, v0 = recs[i - 1]["step"], recs[i - 1]["objective"]
            f = (target - v0) / (rec["objective"] - v0)
            crossing = s0 + f * (rec["step"] - s0) if s0 == 0 else \
                math.exp(math.log(s0) + f * (math.log(rec["step"]) - math.log(s0)))
            return {**rec, "crossing": crossing}
    return None


def test_large_history_is_fast_and_matches_reference():
    hist = synthetic_history()
    assert len(hist) == 100_000
    start = time.perf_counter()
    got = time_to_target(hist, 0.9, "maximize", crossing="confirmed")  # as reference() does
    gaps = final_and_at_target_gap(hist, 0.9, "maximize", crossing="confirmed")
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"took {elapsed:.2f} s"

    assert len(got) == 1000 and got["trial_id"].tolist()[:3] == ["t0000", "t0001", "t0002"]
    assert 0 < got["reached"].sum() < 1000  # both outcomes occur
    never = got.loc[~got["reached"], MEASURED]
    assert never.isna().all().all()
    checked = 0
    for i in [0, 1, 2, 17, 123, 500, 998, 999, *got.index[~got["reached"]][:3]]:
        tid = got.loc[i, "trial_id"]
        ref = reference(hist, tid, 0.9)
        if ref is None:
            assert not got.loc[i, "reached"]
            continue
        checked += 1
        assert got.loc[i, "reached"]
        assert got.loc[i, "steps_to_target"] == pytest.approx(ref["crossing"], rel=1e-12)
        assert ref["step"] - 10 < got.loc[i, "steps_to_target"] <= ref["step"]
        batch = ref["examples_seen"] / ref["step"]  # each trial has one batch size
        assert got.loc[i, "examples_to_target"] == pytest.approx(ref["crossing"] * batch)
        assert got.loc[i, "epoch_to_target"] == pytest.approx(ref["crossing"] * batch / 50_000)
        assert got.loc[i, "value_at_target"] == ref["objective"]
        assert got.loc[i, "eval_step_at_target"] == ref["step"]
        last = hist[hist["trial_id"] == tid].iloc[-1]
        assert gaps.loc[i, "gap_loss_final"] == last["gap_loss"]
    assert checked >= 5
