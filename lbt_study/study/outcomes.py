"""What Optuna is told about a finished trial, decided in one place from its trials-table row.

The runner tells Optuna as each trial finishes (``StudySearch.on_trial_complete``) and
``lbt-study resume`` tells it for trials the dead driver recorded but never reported; both
read the same row, so both must tell the same thing:

- ``ok`` with a finite final objective: COMPLETE with ``[objective]``, or with
  ``[objective, seconds_to_target]`` for a multi-objective search (a target never reached
  counts as infinitely slow: ``inf``);
- ``pruned``: PRUNED (stopped early by ASHA);
- anything else (diverged, out of memory, failed, or ``ok`` without a usable objective):
  FAIL, so the sampler moves away; never COMPLETE with a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from optuna.trial import TrialState

OK, PRUNED = "ok", "pruned"
"""The two of ``lbt_study.records.schema.STATUSES`` that are not failures (tests/test_outcomes.py
checks they are statuses)."""


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (numpy scalars included, bools and
    strings not), else None."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def optuna_outcome(record: Mapping[str, Any] | Any,
                   multi_objective: bool) -> tuple[TrialState, list[float] | None]:
    """(state, values) to tell Optuna for a trials-table ``record`` (a dict or a pandas
    Series with ``status``, ``final_objective`` and, multi-objective, ``seconds_to_target``).
    ``values`` is None unless the state is COMPLETE."""
    status = record.get("status")
    objective = finite(record.get("final_objective"))
    if status == OK and objective is not None:
        if not multi_objective:
            return TrialState.COMPLETE, [objective]
        seconds = finite(record.get("seconds_to_target"))
        return TrialState.COMPLETE, [objective, math.inf if seconds is None else seconds]
    if status == PRUNED:
        return TrialState.PRUNED, None
    return TrialState.FAIL, None
