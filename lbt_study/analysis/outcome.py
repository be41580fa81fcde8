"""An analysis result or the reason there is none (``Outcome``), and how ``analyze`` gets one.

An analysis declares what it cannot do by raising ``CannotCompute`` (too few batch sizes, no
target, no trial reached it, a column the tables lack, ...): ``attempt`` turns exactly that
into the Outcome's reason. Anything else an analysis raises (a KeyError from a misspelt
column, a TypeError, an AttributeError, a plain ValueError from a bad argument) is a bug and
propagates. ``guard`` gives the reasons not to start at all, in the words every section of
the report shows: no rows, no direction, no target, a missing column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pandas as pd

from lbt_study.analysis._checks import CannotCompute, missing_columns
from lbt_study.analysis.settings import StudyInfo

T = TypeVar("T")

NO_ROWS = "the trials table has no rows: no trial has finished"
NO_DIRECTION = ("the objective's direction is unknown (see the study summary); lbt-study "
                "never guesses it from a name")
NO_TARGET = "the study has no target, so steps, examples and seconds to target are not measured"


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """An analysis result, or the reason there is none (at most one is set; neither: the
    analysis does not apply, e.g. the lr fit per norm of a study with one norm)."""

    value: T | None = None
    reason: str | None = None


def attempt(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Outcome[T]:
    """``fn(*args, **kwargs)`` as an Outcome: its ``CannotCompute`` becomes the reason
    ("``what`` could not be computed: ..."); every other exception propagates."""
    try:
        return Outcome(fn(*args, **kwargs))
    except CannotCompute as exc:
        text = str(exc)
        return Outcome(reason=f"{what} could not be computed: "
                              f"{text if len(text) < 400 else text[:400] + ' ...'}")


def guard(trials: pd.DataFrame, study: StudyInfo, columns: Iterable[str],
          needs_target: bool = False) -> str | None:
    """Why an analysis cannot start (no rows, no direction, no target, a missing column)."""
    if trials.empty:
        return NO_ROWS
    if study.direction is None:
        return NO_DIRECTION
    if needs_target and study.target is None:
        return NO_TARGET
    return missing_columns(trials, columns, "trials")


def run(trials: pd.DataFrame, study: StudyInfo, columns: Iterable[str], what: str,
        fn: Callable[..., T], *args: Any, needs_target: bool = False,
        **kwargs: Any) -> Outcome[T]:
    """``fn(*args, **kwargs)`` unless ``guard`` gives a reason not to start."""
    reason = guard(trials, study, columns, needs_target)
    return Outcome(reason=reason) if reason else attempt(what, fn, *args, **kwargs)


def then(previous: Outcome[Any], what: str, fn: Callable[..., T], **kwargs: Any) -> Outcome[T]:
    """``fn`` of the previous result, or the previous reason."""
    return previous if previous.reason else attempt(what, fn, previous.value, **kwargs)
