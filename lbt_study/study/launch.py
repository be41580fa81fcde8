"""Launching a study, fresh or resumed: whatever its protocol, through one door.

A protocol without a runner of its own runs its cells with ``driver.run_study`` and resumes
by settling the dead driver's trials (``resume.reconcile``) and running what remains; one
with a runner (the adaptive protocol's rounds) is handed the study with ``fresh``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbt_study.errors import UserError
from lbt_study.study.driver import Progress, run_study
from lbt_study.study.protocols import Protocol, protocol_of
from lbt_study.study.resume import reconcile
from lbt_study.study.spec import Study


def _runner(protocol: Protocol) -> Callable[..., Any] | None:
    if protocol.runner is None:
        return None
    module, _, name = protocol.runner.partition(":")
    return getattr(importlib.import_module(module), name)


def run(study: Study, run_dir: Path, direction: str, **options: Any) -> None:
    """Run a new study in ``run_dir`` (``options``: ``run_study``'s keywords)."""
    runner = _runner(protocol_of(study))
    if runner is None:
        run_study(study, run_dir, direction, **options)
    else:
        runner(study, run_dir, direction, fresh=True, **options)


def resume(study: Study, run_dir: Path, direction: str, *, storage_handle: Any,
           trials: int, say: Progress, **options: Any) -> None:
    """Continue the study whose driver died; ``trials``: what the study asked for in all,
    ``storage_handle``: the opened Optuna storage (None: the run's SQLite)."""
    protocol = protocol_of(study)
    refusal = protocol.resume_refusal(study)
    if refusal is not None:
        raise UserError(f"{run_dir}: {refusal}")
    runner = _runner(protocol)
    if runner is not None:
        say(f"lbt-study: resuming {protocol.name} study {study.name!r} in {run_dir}")
        runner(study, run_dir, direction, fresh=False, **options)
        return
    state = reconcile(run_dir, study.cells(), storage_handle)
    say(f"lbt-study: resuming {study.name!r} in {run_dir}: {state.finished} of {trials} "
        f"trials finished, {state.interrupted} interrupted (will be replaced), "
        f"{state.to_run} to run")
    if state.to_run:
        run_study(study, run_dir, direction, remaining=state.remaining, **options)
