"""The measurements a trial takes: one registry line each, with the columns it adds.

This module is torch-free on purpose: ``lbt_study.records.schema`` reads the declared columns
from it to document the result tables, and records run without torch. Each line names its
implementation as ``module:Class`` (a ``lbt_study.train.measurements.contract.Measurement``),
imported only when a trial is built (``active.ActiveMeasurements``), the way
``lbt_study.train.workload`` names the built-in workloads.

Adding a measurement: write one module here (a ``Measurement`` subclass: the contract and its
hooks are in ``contract.py``; ``weight_distance.py`` is the smallest complete one) and add one
``Declared`` line to ``MEASUREMENTS``. The order of the lines is the order in which the trial
calls the measurements and the order of their columns in the tables.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from lbt_study.errors import unknown_name


@dataclass(frozen=True)
class Declared:
    """One registry line: a measurement's name, its implementation (``module:Class``) and
    the columns it adds, each with a one-line meaning."""

    name: str
    implementation: str
    evaluation: Mapping[str, str] = field(default_factory=dict)
    """Columns of every evaluation row (the history table): the value where the measurement
    is taken and due, NaN otherwise."""
    final: Mapping[str, str] = field(default_factory=dict)
    """Trial-level keys of the last row (the trials table)."""
    about: Mapping[str, str] = field(default_factory=dict)
    """Trial-level keys of the first and last rows, whether or not the measurement is
    taken (why it is not; the trials table)."""

    def load(self) -> type:
        """The implementing class (imports torch)."""
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)


_HERE = __name__

MEASUREMENTS: tuple[Declared, ...] = (
    Declared("noise_scale", f"{_HERE}.noise_scale:NoiseScale", evaluation={
        "gns_simple": "gradient noise scale B_simple = tr(S)/|G|^2, in examples (NaN: "
                      "unmeasurable)",
        "gns_trace_sigma": "tr(S), per-example gradient covariance trace (EMA estimate)",
        "gns_grad_sq": "|G|^2, squared norm of the true gradient (EMA estimate)",
        "gns_small_batch": "the smaller batch of the two-batch-size estimate (the larger is B)",
    }, about={
        "gns_simple_reason": "why gns_simple is NaN in this trial (measure_gns off, one worker "
                             "without accumulation, sync_batch across workers); empty where "
                             "measured",
    }),
    Declared("gns_probe", f"{_HERE}.probe:GradientNoiseProbe", evaluation={
        "gns_probe": "gradient noise scale B_simple = tr(S)/|G|^2 in examples, measured at this "
                     "evaluation from the gradients of a fixed training subset of "
                     "gns_probe_examples (per example; per chunk of the norm batch size under "
                     "batch statistics: the noise scale at that norm batch size); NaN when off "
                     "or when fewer than 2 chunks fit in the subset",
        "gns_probe_se": "standard error of gns_probe: delete-one-group jackknife over up to 16 "
                        "groups of the subset",
    }),
    Declared("precise_bn", f"{_HERE}.precise_bn:PreciseBN"),
    Declared("weight_distance", f"{_HERE}.weight_distance:WeightDistance", evaluation={
        "weight_distance": "||w - w_0||, Euclidean distance of the parameters from "
                           "initialisation",
    }),
    Declared("sharpness", f"{_HERE}.sharpness:Sharpness", final={
        "sharpness": "top Hessian eigenvalue of the training loss at the end (if measured)",
    }),
    Declared("hybrid_alpha", f"{_HERE}.hybrid_alpha:HybridAlpha", final={
        "hybrid_alpha": "mean learnt batch-vs-layer mix of hybrid norm layers (NaN if none)",
    }),
    Declared("swa", f"{_HERE}.swa:WeightAverage", final={
        "swa": "whether the final evaluation is of SWA-averaged weights",
    }),
    Declared("energy", f"{_HERE}.energy:Energy", final={
        "energy_joules": "joules of the training steps (evaluation excluded) from the "
                         "hardware counter: NVML per GPU summed over workers, or RAPL per CPU "
                         "package (one worker per host); NaN where not measured",
        "energy_joules_per_example": "energy_joules / examples trained",
    }, about={
        "energy_source": "nvml, rapl, or 'not measured: ' and why (no counter readable)",
    }),
    Declared("grad_norm_ratio", f"{_HERE}.grad_norm_ratio:GradNormRatio", evaluation={
        "grad_norm_ratio": "max over DDP workers of the local gradient norm / min, at the step "
                           "before this evaluation (NaN: one worker, step 0)",
    }),
)
"""The registry: every measurement a trial may take, in the order the trial calls them."""


def declared(name: str) -> Declared:
    """The registry line of ``name``; the error lists the registered names."""
    for entry in MEASUREMENTS:
        if entry.name == name:
            return entry
    raise unknown_name("measurement", name, [m.name for m in MEASUREMENTS])


def _columns(kind: str) -> dict[str, str]:
    """Every measurement's columns of one kind (``evaluation``, ``final`` or ``about``), in
    registry order."""
    return {c: m for entry in MEASUREMENTS for c, m in getattr(entry, kind).items()}


def seconds_columns() -> dict[str, str]:
    """Each measurement's cost: ``<name>_seconds`` (trials table), in registry order."""
    return {f"{e.name}_seconds": f"seconds the {e.name} measurement took at evaluations "
                                 "(part of eval_seconds; 0 when it is off)"
            for e in MEASUREMENTS}


def _check_registry() -> None:
    """One name per line, one line per column (a registry mistake fails at import)."""
    names = [entry.name for entry in MEASUREMENTS]
    columns = [c for entry in MEASUREMENTS for kind in ("evaluation", "final", "about")
               for c in getattr(entry, kind)]
    for kind, values in (("name", names), ("column", columns)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise RuntimeError(f"measurement registry: {kind}s declared twice: {twice}")


_check_registry()


def evaluation_columns() -> dict[str, str]:
    """The measurements' history-table columns, in registry order."""
    return _columns("evaluation")


def final_columns() -> dict[str, str]:
    """The measurements' trial-level columns of the last row, in registry order."""
    return _columns("final")


def about_columns() -> dict[str, str]:
    """The measurements' trial-level columns of the first and last rows, in registry order."""
    return _columns("about")
