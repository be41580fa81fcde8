"""Energy counters: cumulative joules from the hardware, or the reason there are none.

On GPU, NVML's total energy counter of the trial's device (``nvmlDeviceGetTotalEnergyConsumption``,
millijoules since the driver loaded; package ``nvidia-ml-py``). On CPU, the Linux RAPL
counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, one per package, microjoules,
wrapping at ``max_energy_range_uj``), when readable. Otherwise no counter, and the reason;
never a made-up number. ``COUNTERS`` is tried in order; a test may put a counter of its own
in front (the same interface).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

POWERCAP = Path(os.environ.get("LBT_POWERCAP_ROOT", "/sys/class/powercap"))


class EnergyCounter(Protocol):
    """Cumulative joules of one device (``read``), and where they come from (``source``)."""

    source: str
    per_host: bool
    """Whether it counts the whole host's package (RAPL), not one worker's device (NVML)."""

    def read(self) -> float: ...


class NvmlCounter:
    """NVML's total energy of one CUDA device, in joules."""

    source, per_host = "nvml", False

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.read()  # raises where the device has no energy counter (pre-Volta)

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


class RaplCounter:
    """The sum of the RAPL package counters under ``root``, in joules, unwrapped."""

    source, per_host = "rapl", True

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not self.zones:
            raise OSError(f"no RAPL package counters under {root}")
        self.ranges = [int((z / "max_energy_range_uj").read_text()) for z in self.zones]
        self.last = [self._raw(z) for z in self.zones]
        self.total = 0.0

    @staticmethod
    def _raw(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def read(self) -> float:
        for i, zone in enumerate(self.zones):
            now = self._raw(zone)
            self.total += (now - self.last[i]) % self.ranges[i]
            self.last[i] = now
        return self.total / 1e6


def _nvml(device: torch.device) -> EnergyCounter:
    if device.type != "cuda":
        raise OSError("not a CUDA device")
    try:
        return NvmlCounter(device.index or 0)
    except ImportError:
        raise OSError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    except Exception as exc:  # NVML's own errors: no counter on this device, no driver
        raise OSError(f"NVML: {exc}") from None


def _rapl(device: torch.device) -> EnergyCounter:
    if device.type != "cpu":
        raise OSError("RAPL counts CPU packages")
    return RaplCounter(POWERCAP)


COUNTERS: list[Callable[[torch.device], EnergyCounter]] = [_nvml, _rapl]
"""The counters tried, in order: the first that opens is used."""


def open_counter(device: torch.device) -> tuple[EnergyCounter | None, str]:
    """The first counter of ``COUNTERS`` that opens on ``device`` and its source, or None and
    why none did ("not measured: ...")."""
    reasons = []
    for factory in COUNTERS:
        try:
            counter = factory(device)
        except OSError as exc:
            reasons.append(str(exc))
            continue
        return counter, counter.source
    return None, "not measured: " + "; ".join(reasons)
