"""Energy (issue 23, part 4): the RAPL reader on a powercap tree written by the test, and
the measurement through a counter of the same interface (CPU has no readable counter here;
never a made-up number)."""

from __future__ import annotations

import math

import pytest
import torch

from lbt_study.train import energy, run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.energy import RaplCounter, open_counter


def package(root, name: str, uj: int, wrap: int = 1_000_000) -> None:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(str(uj))
    (zone / "max_energy_range_uj").write_text(str(wrap))


def test_rapl_sums_the_packages_and_unwraps_the_counter(tmp_path):
    package(tmp_path, "intel-rapl:0", 900_000)
    package(tmp_path, "intel-rapl:1", 100)
    package(tmp_path, "intel-rapl:0:0", 5)  # a sub-zone (core), inside package 0: not added
    counter = RaplCounter(tmp_path)
    assert counter.read() == 0.0
    package(tmp_path, "intel-rapl:0", 200_000)  # wrapped past 1,000,000 uJ: +300,000
    package(tmp_path, "intel-rapl:1", 50_100)  # +50,000
    assert counter.read() == pytest.approx(0.35)
    with pytest.raises(OSError, match="no RAPL package counters"):
        RaplCounter(tmp_path / "none")


def test_no_counter_says_why():
    counter, why = open_counter(torch.device("cpu"))
    if counter is not None:
        pytest.skip(f"this machine has a readable counter ({why})")
    assert why.startswith("not measured: not a CUDA device; no RAPL package counters")


class OneJoulePerRead:
    """A counter of the same interface that gains exactly 1 J between reads."""

    source, per_host = "fake", False

    def __init__(self, device: torch.device) -> None:
        self.joules = 0.0

    def read(self) -> float:
        self.joules += 1.0
        return self.joules


def test_the_training_steps_are_counted_and_evaluation_left_out(monkeypatch):
    """Each step reads before and after: 1 J per step, whatever the evaluations read."""
    monkeypatch.setattr(energy, "COUNTERS", [OneJoulePerRead])
    rows: list[dict] = []
    run_training(TrainConfig(workload="digits", batch_size=64, lr=0.05, epochs=0.5),
                 rows.append)
    last = rows[-1]
    assert last["energy_source"] == "fake"
    assert last["energy_joules"] == float(last["step"])
    assert last["energy_joules_per_example"] == pytest.approx(1 / 64)


def test_off_trials_have_nan_columns():
    rows: list[dict] = []
    run_training(TrainConfig(workload="digits", batch_size=64, lr=0.05, epochs=0.2),
                 rows.append)
    if rows[-1]["energy_source"].startswith("not measured"):
        assert math.isnan(rows[-1]["energy_joules"])
