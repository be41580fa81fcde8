"""The one exception type for user mistakes.

A ``UserError`` is shown to the user as a single line (what is wrong, the values, what is
allowed) and ends the CLI with exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input, reported as one line."""


def unknown_name(kind: str, name: object, known: list[str] | tuple[str, ...]) -> UserError:
    """The registry error: the unknown name and every valid one."""
    return UserError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line: its type and the last line of its message (where a
    multi-line message, such as a remote traceback, says what went wrong)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:limit]
