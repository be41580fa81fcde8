"""The training loop's pieces against hand computations."""

import math

import pytest
import torch

from lbt_study.errors import UserError
from lbt_study.train import eval_steps, make_scheduler, run_training
from lbt_study.train.batching import BatchSchedule
from lbt_study.train.config import TrainConfig, parse_config
from lbt_study.train.sampling import IndexStream


def lrs(total, warmup, kind, lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_scheduler(opt, total, warmup, kind)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_cosine():
    got = lrs(total=10, warmup=4, kind="cosine")
    warm = [1 / 4, 2 / 4, 3 / 4, 1.0]  # lr/warmup, rising linearly to lr
    cos = [0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(1, 6)]
    assert got[:4] == pytest.approx(warm)
    assert got[4:9] == pytest.approx([1.0, *cos[:4]][:5])
    assert got[-1] == pytest.approx(cos[4])


def test_constant_schedule_without_warmup():
    assert lrs(total=5, warmup=0, kind="constant", lr=0.3) == pytest.approx([0.3] * 5)


@pytest.mark.parametrize("exponent,expected", [(1.0, 0.4), (0.5, 0.2), (0.0, 0.1)])
def test_lr_scaling_rules(exponent, expected):
    cfg = TrainConfig(batch_size=1024, base_lr=0.1, lr_ref_batch_size=256,
                      lr_scaling_exponent=exponent)
    assert BatchSchedule.build(cfg, 1000).learning_rate == pytest.approx(expected)


def test_exactly_one_of_lr_and_base_lr():
    with pytest.raises(UserError, match="exactly one of lr or base_lr"):
        parse_config({"batch_size": 32, "lr": 0.1, "base_lr": 0.1})
    with pytest.raises(UserError, match="exactly one of lr or base_lr"):
        parse_config({"batch_size": 32})


def test_unknown_config_key_is_named():
    with pytest.raises(UserError, match=r"batchsize: unknown key \(did you mean .batch_size.\?\)"):
        parse_config({"batchsize": 32, "lr": 0.1})


def test_eval_steps_cross_each_multiple_of_the_interval():
    # B=300, every 1000 examples: crossings after steps 4 (1200), 7 (2100), 10 (3000)
    examples_after = [300 * s for s in range(12)]
    assert eval_steps(examples_after, every_examples=1000) == {0, 4, 7, 10, 11}


def test_index_stream_covers_each_epoch_once_and_crosses_epochs():
    stream = IndexStream(n=10, seed=0)
    first = torch.cat([stream.take(4), stream.take(4), stream.take(2)])
    assert sorted(first.tolist()) == list(range(10))
    crossing = stream.take(7)
    assert len(crossing) == 7 and len(set(crossing.tolist())) == 7
    again = IndexStream(n=10, seed=0)
    assert torch.equal(again.take(10), first)  # same seed, same order: workers agree


def test_a_run_reports_examples_gap_and_throughput():
    rows = []
    out = run_training(TrainConfig(model="mlp", batch_size=100, lr=0.1, epochs=1,
                                   eval_every_examples=500, norm="batch"), rows.append)
    assert out.status == "ok" and out.steps == 15 and out.examples_seen == 1500
    assert [r["step"] for r in rows] == [0, 5, 10, 15]
    last = rows[-1]
    assert last["examples_seen"] == 1500 and last["epoch"] == pytest.approx(1500 / 1437)
    assert last["gap_accuracy"] == pytest.approx(last["train_accuracy"] - last["val_accuracy"])
    assert last["gap_loss"] == pytest.approx(last["val_loss"] - last["train_loss"])
    assert last["throughput"] > 0 and last["train_seconds"] > 0
    assert math.isnan(rows[0]["throughput"])  # nothing trained before step 0
    assert last["status"] == "ok" and rows[1]["status"] == "running"


def test_divergence_ends_the_run_with_its_step():
    rows = []
    out = run_training(TrainConfig(model="mlp", batch_size=64, lr=1e6, epochs=3, norm="none"),
                       rows.append)
    assert out.status == "diverged"
    assert out.diverged_step is not None and 1 <= out.diverged_step < 3 * 1437 // 64
    assert rows[-1]["status"] == "diverged" and rows[-1]["diverged_step"] == out.diverged_step
    assert math.isnan(rows[-1]["objective"])


def test_warmup_not_shorter_than_training_is_refused():
    with pytest.raises(UserError, match="warmup of 12 steps is not shorter than training"):
        # 0.99 epochs of warmup and 1 epoch of training at B=1437/12: both round to 12 steps
        run_training(TrainConfig(model="mlp", batch_size=120, lr=0.1, epochs=1.0,
                                 warmup_epochs=0.99))


def test_batch_growth_schedule_steps_and_examples():
    cfg = TrainConfig(batch_size=100, lr=0.1, epochs=1, batch_growth="0.5:2,0.75:4")
    # 1000 examples: 500 at B=100 (5 steps), 250 at B=200 (2 steps), 250 at B=400 (1 step)
    schedule = BatchSchedule.build(cfg, 1000)
    assert list(schedule.step_batch) == [100] * 5 + [200] * 2 + [400]
    assert schedule.total_steps == 8


@pytest.mark.parametrize("growth", ["0.5", "0.5:2,0.4:4", "0.5:2,0.7:2", "1.5:2", "a:b"])
def test_malformed_batch_growth_is_refused(growth):
    with pytest.raises(UserError, match="batch_growth"):
        parse_config({"batch_size": 32, "lr": 0.1, "batch_growth": growth})


def test_a_growing_batch_run_reports_the_current_batch_and_examples():
    rows = []
    out = run_training(TrainConfig(model="mlp", batch_size=64, lr=0.05, epochs=2,
                                   batch_growth="0.5:4", accumulation_steps=2,
                                   eval_every_examples=500), rows.append)
    # 1437 examples per epoch, 2874 budget: 1437 at B=64 (23 steps), 1437 at B=256 (6 steps)
    assert out.steps == 29 and out.examples_seen == 23 * 64 + 6 * 256
    assert rows[1]["batch_size_current"] == 64 and rows[-1]["batch_size_current"] == 256
    assert rows[-1]["examples_seen"] == out.examples_seen
    assert [r["examples_seen"] // 500 for r in rows[1:-1]] == list(range(1, len(rows) - 1))
    assert rows[-1]["gns_small_batch"] == 128  # the micro-batch of the last phase


def test_stop_at_target_ends_at_the_first_evaluation_reaching_it_with_the_same_history():
    base = dict(model="mlp", norm="none", batch_size=32, lr=0.05, epochs=3.0,
                eval_every_examples=5 * 32, target=0.9)
    full, stopped = [], []
    run_training(TrainConfig(**base), full.append)
    outcome = run_training(TrainConfig(**base, stop_at_target=True,
                                       stop_at_target_patience=1), stopped.append)
    first = next(r for r in full if r["objective"] >= 0.9)
    assert outcome.status == "ok" and outcome.steps == first["step"] < full[-1]["step"]
    last = stopped[-1]
    assert last["status"] == "ok" and last["stopped_at_target"] is True
    assert last["step"] == first["step"] and last["objective"] == first["objective"]
    # every evaluation up to the stop is the uninterrupted run's
    assert [r["val_loss"] for r in stopped] == [r["val_loss"] for r in full][: len(stopped)]
    assert full[-1]["stopped_at_target"] is False


def test_stop_at_target_patience_waits_for_evaluations_in_a_row():
    base = dict(model="mlp", norm="none", batch_size=32, lr=0.05, epochs=3.0,
                eval_every_examples=5 * 32, target=0.9, stop_at_target=True)
    one, three = [], []
    run_training(TrainConfig(**base, stop_at_target_patience=1), one.append)
    run_training(TrainConfig(**base, stop_at_target_patience=3), three.append)
    hits = [r["objective"] >= 0.9 for r in three]
    assert hits[-3:] == [True, True, True] and len(three) >= len(one) + 2


def test_stop_at_target_needs_a_target():
    with pytest.raises(UserError, match="stop_at_target needs a target"):
        parse_config({"batch_size": 32, "lr": 0.1, "stop_at_target": True})


@pytest.mark.parametrize("every,expected", [(0.0, "all"), (3600.0, "last")])
def test_checkpoints_follow_their_time_cadence_and_the_last_evaluation(every, expected):
    reported, checkpointed = [], []
    cfg = TrainConfig(model="mlp", norm="none", batch_size=64, lr=0.05, epochs=1.0,
                      eval_every_examples=256, checkpoint_every_s=every)
    run_training(cfg, reported.append, checkpoint=lambda row, state: checkpointed.append(row))
    steps = [r["step"] for r in reported + checkpointed]
    assert sorted(steps) == sorted(set(steps)) and len(steps) >= 6  # each evaluation once
    if expected == "all":
        assert reported == [] and checkpointed[-1]["status"] == "ok"
    else:
        assert [r["step"] for r in checkpointed] == [max(steps)]
        assert all(r["status"] == "running" for r in reported)
