"""make_batch_plan: B = workers x accumulation x micro-batch, and the norm batch size."""

import math

import numpy as np
import pytest

from lbt_study.errors import UserError
from lbt_study.train.batching import make_batch_plan
from lbt_study.train.config import TrainConfig


@pytest.mark.parametrize(
    ("batch", "workers", "accum", "micro"),
    [(64, 1, 1, 64), (64, 2, 1, 32), (64, 1, 4, 16), (96, 3, 2, 16), (12, 4, 3, 1)],
)
def test_micro_batch_is_batch_over_workers_times_accumulation(batch, workers, accum, micro):
    plan = make_batch_plan(batch, workers, accum)
    assert plan.micro_batch_size == micro
    assert plan.workers * plan.accumulation_steps * plan.micro_batch_size == batch
    assert plan.per_worker_batch_size == micro * accum
    assert plan.global_batch_size == batch


def test_describe_and_record_show_the_arithmetic():
    plan = make_batch_plan(96, 3, 2, norm="batch")
    assert plan.describe() == (
        "B=96 = 3 workers x 2 accumulation x 16 micro-batch; norm batch size 16"
    )
    assert plan.as_record() == {
        "global_batch_size": 96,
        "workers": 3,
        "accumulation_steps": 2,
        "micro_batch_size": 16,
        "norm_batch_size": 16,
    }
    assert make_batch_plan(8).describe().endswith("norm batch size n/a")


def test_batch_not_divisible_by_workers_names_the_numbers():
    with pytest.raises(UserError) as info:
        make_batch_plan(100, workers=3)
    message = str(info.value)
    assert "100" in message and "3" in message


def test_batch_not_divisible_by_workers_times_accumulation_names_the_numbers():
    # 100 is divisible by 2 but not by 2 x 3 = 6.
    with pytest.raises(UserError) as info:
        make_batch_plan(100, workers=2, accumulation_steps=3)
    message = str(info.value)
    assert "100" in message and "2 x 3 = 6" in message


@pytest.mark.parametrize(
    ("norm", "ghost", "expected"),
    [
        ("batch", None, 16),
        ("ghost_batch", 4, 4),
        ("ghost_batch", 16, 16),
        ("sync_batch", None, 32),
        ("layer", None, None),
        ("none", None, None),
        ("group", None, None),
        ("instance", None, None),
    ],
)
def test_norm_batch_size(norm, ghost, expected):
    plan = make_batch_plan(64, workers=2, accumulation_steps=2, norm=norm, ghost_batch_size=ghost)
    assert plan.micro_batch_size == 16
    assert plan.norm_batch_size == expected


def test_batch_norm_with_accumulation_sees_the_micro_batch():
    plan = make_batch_plan(64, workers=1, accumulation_steps=4, norm="batch")
    assert plan.micro_batch_size == 16
    assert plan.norm_batch_size == 16


def test_sync_batch_pools_workers_not_accumulation():
    plan = make_batch_plan(96, workers=3, accumulation_steps=4, norm="sync_batch")
    assert plan.micro_batch_size == 8
    assert plan.norm_batch_size == 24


def test_ghost_size_not_dividing_micro_batch_raises_with_numbers():
    with pytest.raises(UserError) as info:
        make_batch_plan(64, workers=2, norm="ghost_batch", ghost_batch_size=5)
    message = str(info.value)
    assert "5" in message and "32" in message


@pytest.mark.parametrize("ghost", [None, 0, -4])
def test_ghost_batch_needs_a_positive_ghost_size(ghost):
    with pytest.raises(UserError, match="ghost_batch_size"):
        make_batch_plan(64, norm="ghost_batch", ghost_batch_size=ghost)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"global_batch_size": 0}, "batch_size"),
        ({"global_batch_size": -8}, "batch_size"),
        ({"global_batch_size": True}, "batch_size"),
        ({"global_batch_size": 8.0}, "batch_size"),
        ({"global_batch_size": 8, "workers": 0}, "workers"),
        ({"global_batch_size": 8, "workers": True}, "workers"),
        ({"global_batch_size": 8, "accumulation_steps": -1}, "accumulation_steps"),
        ({"global_batch_size": 8, "accumulation_steps": False}, "accumulation_steps"),
    ],
)
def test_non_positive_or_bool_values_raise(kwargs, name):
    with pytest.raises(UserError, match=name):
        make_batch_plan(**kwargs)


# ------------------------------------------------------------------------- BatchSchedule

def _schedule(n=1000, **values):
    from lbt_study.train.batching import BatchSchedule
    from lbt_study.train.config import TrainConfig

    return BatchSchedule.build(TrainConfig(**{"lr": 0.1, "epochs": 1, **values}), n)


def test_schedule_lays_out_every_step_with_batch_growth():
    s = _schedule(batch_size=100, batch_growth="0.5:2,0.75:4", warmup_epochs=0.25, workers=2)
    assert s.step_batch == (100,) * 5 + (200,) * 2 + (400,)
    assert s.examples_after == (0, 100, 200, 300, 400, 500, 700, 900, 1300)
    assert s.warmup_steps == 2  # 0.25 epochs of 1000 at the first B=100: 2.5 -> 2
    assert [s.plan_at(k).global_batch_size for k in (0, 1, 5, 6, 8)] == [100, 100, 100, 200, 400]
    assert s.plan_at(6).micro_batch_size == 100  # 200 over 2 workers
    assert list(s.worker_slice(list(range(200)), 1, s.plan_at(6))) == list(range(100, 200))
    uniform = TrainConfig(lr=0.1, batch_size=100, eval_every_examples=500)
    assert uniform.eval_schedule == "uniform"  # chosen by giving the spacing
    assert s.eval_steps(uniform) == {0, 5, 8}  # 500 examples after step 5, 1000 crossed at 8
    # geometric, 1 per doubling of 100: 100 200 400 800 -> steps 1 2 4 7, and the last
    assert s.eval_steps(TrainConfig(lr=0.1, batch_size=100, evals_per_doubling=1,
                                    eval_first_step=1)) == {0, 1, 2, 4, 7, 8}
    # the default first evaluated step is 4: steps 1 and 2 are skipped, step 0 is kept
    assert s.eval_steps(TrainConfig(lr=0.1, batch_size=100, evals_per_doubling=1)) == \
        {0, 4, 7, 8}


def test_geometric_schedule_spaces_evaluations_evenly_in_log_examples_at_every_b():
    from lbt_study.train.batching import geometric_eval_steps

    for b, steps in ((16, 719), (128, 90), (1024, 11)):
        examples = [b * s for s in range(steps + 1)]
        marks = sorted(geometric_eval_steps(examples, 4))
        assert marks[:2] == [0, 1] and marks[-1] == steps
        doublings = np.diff(np.log2(marks[1:]))  # between consecutive evaluations
        assert doublings.max() <= 1.0 + 1e-12  # every step early on: 1 -> 2 at most
        assert np.median(doublings) <= math.log2(1.25) + 1e-12  # the median: <= 25% apart
        # once a step is finer than a mark (from step 8 on), 2^(1/4) apart up to one step
        late = np.array(marks[1:-1])
        late = late[late >= 8]
        if len(late) > 1:
            assert np.diff(np.log2(late)).max() <= 0.25 + math.log2(9 / 8)
        assert abs(len(marks) - (4 * math.log2(steps) + 2)) <= 6  # ~4 per doubling
    assert geometric_eval_steps([0, 16, 32, 48, 64], 4) == {0, 1, 2, 3, 4}


def test_schedule_scales_the_learning_rate_to_b():
    s = _schedule(batch_size=1024, lr=None, base_lr=0.1, lr_ref_batch_size=256,
                  lr_scaling_exponent=0.5)
    assert s.learning_rate == pytest.approx(0.2)


def test_schedule_gives_the_noise_scale_its_two_batch_sizes():
    one = _schedule(batch_size=64, accumulation_steps=4)
    assert one.gns_batch_sizes(one.plan_at(1), data_parallel=False) == (16, 64)
    assert _schedule(batch_size=64).gns_batch_sizes(_schedule(batch_size=64).plan_at(1),
                                                    data_parallel=False) is None
    ddp = _schedule(batch_size=64, workers=2, accumulation_steps=2)
    assert ddp.gns_batch_sizes(ddp.plan_at(1), data_parallel=True) == (32, 64)


def test_memory_probe_keeps_b_and_records_the_accumulation():
    s = _schedule(batch_size=96, workers=2, norm="ghost_batch", ghost_batch_size=8)
    assert s.micro_batch_candidates(96) == [48, 24, 16, 8]
    probed = s.with_micro_batches({96: 16})
    plan = probed.plan_at(1)
    assert (plan.global_batch_size, plan.micro_batch_size, plan.accumulation_steps,
            plan.norm_batch_size) == (96, 16, 3, 8)
    assert s.plan_at(1).micro_batch_size == 48  # the schedule is a value: the old one stays
    assert "B=96 = 2 workers x 3 accumulation x 16 micro-batch" in probed.describe()


def test_schedule_refuses_warmup_not_shorter_than_training():
    with pytest.raises(UserError, match="warmup of 10 steps is not shorter than training"):
        _schedule(batch_size=100, warmup_epochs=0.999)
