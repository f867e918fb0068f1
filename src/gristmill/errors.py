"""The two kinds of failure a user sees.

`SpecError` is a problem with what was asked (a path, a model, an option): it is raised before any
process starts, its message is one line that names the input and what is wrong, and the CLI exits 2.
`JobFailed` is a problem found while running (shards that failed every attempt, an output disk that
filled up): committed shards are kept, the CLI exits 1, and the same command resumes.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GristmillError(Exception):
    """Base of every error gristmill raises on purpose."""


class SpecError(GristmillError, ValueError):
    """The job as asked cannot run; the message is one line naming the input and the fix."""


class JobFailed(GristmillError, RuntimeError):
    """The job ran but did not complete; committed work is kept and a rerun resumes it."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ItemError(GristmillError):
    """One input could not be processed; ``stage`` is read, decode or preprocess. Raised inside
    loaders and recorded as the input's error row: never a failed job."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class SourceChanged(SpecError):
    """A container (a tar, a table) is not what it was when the job froze its input list: its
    size or version changed. Results would mix two versions of it, so the job stops (exit 2);
    committed shards are kept."""
