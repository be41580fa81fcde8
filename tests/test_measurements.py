"""The measurement contract (lbt_study.train.measurements): a torch-free registry whose
columns the schema reads, the hooks called where the contract says, schedules that skip
evaluations (NaN there, the same values elsewhere), seconds accounted per measurement, and
checkpoints from which a resumed trial ends as an uninterrupted one."""

import io
import math
import subprocess
import sys

import pytest
import torch

from lbt_study.errors import UserError
from lbt_study.records.results import TRIALS_COLUMNS
from lbt_study.records.schema import HISTORY_COLUMNS, TRIAL_ONLY_KEYS
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements import MEASUREMENTS, Declared, declared, seconds_columns
from lbt_study.train.measurements import active as active_module
from lbt_study.train.measurements.active import ActiveMeasurements
from lbt_study.train.measurements.contract import (
    EVERY_EVALUATION,
    EveryNthEvaluation,
    Measurement,
)
from lbt_study.train.measurements.probe import GradientNoiseProbe
from lbt_study.train.setup import assemble

RUN = {"model": "mlp", "norm": "batch", "batch_size": 64, "lr": 0.05, "epochs": 1,
       "measure_flops": False, "gns_probe_examples": 128, "precise_bn_examples": 256,
       "checkpoint_every_s": 0.0, "gns_probe_schedule": "evaluation", "eval_first_step": 1}
TIMES = {"train_seconds", "eval_seconds", "throughput", "step_time_median", "step_time_p90",
         "step_time_median_run", "step_time_p90_run", "peak_memory_bytes", "mfu", "mfu_run",
         *seconds_columns()}


def test_the_registry_loads_without_torch_and_its_columns_are_the_schemas():
    code = ("import sys, lbt_study.train.measurements, lbt_study.records.schema; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    for line in MEASUREMENTS:
        assert issubclass(line.load(), Measurement), line
        assert set(line.evaluation) <= set(HISTORY_COLUMNS)
        assert set(line.final) | set(line.about) <= TRIAL_ONLY_KEYS & set(TRIALS_COLUMNS)
    with pytest.raises(UserError, match="known: .*gns_probe.*noise_scale"):
        declared("gns_prob")


def test_every_nth_evaluation_counts_the_planned_ones_and_keeps_the_last():
    when = EveryNthEvaluation(3, {0, 1, 2, 4, 8, 16, 24})
    assert [s for s in (0, 1, 2, 4, 8, 16, 24) if when.due(s)] == [0, 4, 24]
    assert when.due(19)  # unplanned (a seconds budget ran out): always measured
    assert all(EVERY_EVALUATION.due(s) for s in range(5))
    with pytest.raises(ValueError, match="at least 1"):
        EveryNthEvaluation(0, {0})


class Recorder(Measurement):
    """Records every hook call; measures the step it is evaluated at."""

    calls: list = []

    @classmethod
    def build(cls, parts):
        return cls()

    def start_step(self, step, plan):
        self.calls.append(("start", step, plan.accumulation_steps))

    def after_backward(self):
        self.calls.append(("backward",))

    def end_step(self):
        self.calls.append(("end",))

    def after_update(self, step):
        self.calls.append(("update", step))

    def evaluation(self, model, step):
        self.calls.append(("evaluation", step))
        return {"recorded_step": float(step)}

    def final(self, model):
        self.calls.append(("final",))
        return {"recorded_final": True}


RECORDER = Declared("recorder", f"{__name__}:Recorder", evaluation={"recorded_step": "step"},
                    final={"recorded_final": "whether final ran"})


def test_hooks_are_called_where_the_contract_says(monkeypatch):
    monkeypatch.setattr(active_module, "MEASUREMENTS", (RECORDER,))
    Recorder.calls = []
    rows = []
    cfg = TrainConfig(**{**RUN, "epochs": 3 * 64 / 1437, "accumulation_steps": 2})
    run_training(cfg, rows.append)
    step = [("backward",), ("backward",), ("end",)]
    assert Recorder.calls == [
        ("evaluation", 0),
        ("start", 1, 2), *step, ("update", 1), ("evaluation", 1),
        ("start", 2, 2), *step, ("update", 2), ("evaluation", 2),
        ("start", 3, 2), *step, ("update", 3), ("evaluation", 3), ("final",)]
    assert [r["recorded_step"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["recorded_final"] is True and "recorded_final" not in rows[-2]


def _checkpointed(cfg):
    """Rows and states of a trial checkpointed at every evaluation (``cfg`` checkpoints at
    every evaluation)."""
    rows, states = [], []

    def checkpoint(row, state):
        buf = io.BytesIO()
        torch.save(state, buf)
        states.append(buf.getvalue())
        rows.append(row)

    run_training(cfg, checkpoint=checkpoint)
    return rows, [torch.load(io.BytesIO(s), weights_only=True) for s in states]


def test_a_measurement_on_its_own_schedule_skips_evaluations_and_costs_less(monkeypatch):
    cfg = TrainConfig(**RUN)
    every, _ = _checkpointed(cfg)
    built = GradientNoiseProbe.build.__func__

    def every_second(cls, parts):
        probe = built(cls, parts)
        probe.when = EveryNthEvaluation.of(parts, 2)
        return probe

    monkeypatch.setattr(GradientNoiseProbe, "build", classmethod(every_second))
    rows, states = _checkpointed(cfg)
    assert len(rows) == len(every) > 4
    for i, (row, full) in enumerate(zip(rows, every, strict=True)):
        assert row["val_loss"] == full["val_loss"]  # the same training
        if i % 2 == 0 or i == len(rows) - 1:
            assert row["gns_probe"] == full["gns_probe"] and math.isfinite(row["gns_probe"])
        else:
            assert math.isnan(row["gns_probe"]) and math.isnan(row["gns_probe_se"])
    probe = [s["measurements"]["seconds"]["gns_probe"] for s in states]
    for i in range(1, len(probe)):  # a skipped evaluation costs the probe nothing
        assert (probe[i] > probe[i - 1]) == (i % 2 == 0 or i == len(probe) - 1), i
    seconds = states[-1]["measurements"]["seconds"]
    assert seconds["precise_bn"] > 0 and seconds["swa"] == 0.0  # not taken


def test_seconds_grow_over_evaluations_and_carry_over_a_resume():
    cfg = TrainConfig(**RUN)
    rows, states = _checkpointed(cfg)
    probe = [s["measurements"]["seconds"]["gns_probe"] for s in states]
    assert probe == sorted(probe) and probe[0] > 0
    resumed = ActiveMeasurements.build(assemble(cfg, torch.device("cpu")))
    resumed.load_state_dict(states[2]["measurements"], int(states[2]["step"]))
    assert resumed.seconds == states[2]["measurements"]["seconds"]


@pytest.mark.parametrize("extra", [
    {"accumulation_steps": 2, "swa_start": 0.5, "sharpness_examples": 32,
     "sharpness_iters": 5},  # noise scale (micro-batches), SWA, sharpness
    {"norm": "hybrid", "batch_growth": "0.5:2", "accumulation_steps": 2},  # EMAs restart
])
def test_a_resumed_trial_ends_with_every_measurement_as_an_uninterrupted_one(extra):
    cfg = TrainConfig(**{**RUN, "epochs": 1.5, **extra})
    rows, states = _checkpointed(cfg)
    last = rows[-1]
    assert math.isfinite(last["gns_simple"]) and math.isfinite(last["gns_probe"])
    for state in (states[1], states[len(states) // 2]):
        resumed = []
        run_training(cfg, resumed.append, resume=state)
        assert resumed[0]["step"] > int(state["step"])
        for key, value in last.items():
            if key not in TIMES:
                got = resumed[-1][key]
                assert got == value or (math.isnan(value) and math.isnan(got)), key
