"""What gristmill prints: its own one-line messages on stderr, the details in an optional file.

stderr gets ``gristmill: LEVEL: message`` lines at the chosen level (WARNING by default; ``-v``
INFO, ``-vv`` DEBUG, or ``--log-level``) and never a traceback: a fault the job survives is one
line, not a page. ``--log-file PATH`` gets every record at DEBUG level with its traceback, from the
driver and from the local worker processes (each appends whole lines), for a bug report. Workers
are configured with the driver's settings (``current``), so their lines look the same.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

FORMAT = "gristmill: %(levelname)s: %(message)s"
FILE_FORMAT = "%(asctime)s pid %(process)d %(name)s %(levelname)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class LogSetup:
    level: int = logging.WARNING
    file: str | None = None


class _OneLine(logging.Formatter):
    """The message without its traceback (that goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return super().format(record)


class _Ours(logging.StreamHandler):  # type: ignore[type-arg]
    """gristmill's stderr handler, by type: a later ``configure`` replaces it, not a user's."""


class _OurFile(logging.FileHandler):
    """gristmill's ``--log-file`` handler, told apart the same way."""


def configure(setup: LogSetup) -> None:
    """Send log records to stderr (one line each) and, if ``setup.file``, to that file in full."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Ours | _OurFile)]:
        root.removeHandler(handler)
        handler.close()
    stderr = _Ours()
    stderr.setLevel(setup.level)
    stderr.setFormatter(_OneLine(FORMAT))
    root.addHandler(stderr)
    root.setLevel(setup.level)
    ours = logging.getLogger("gristmill")
    ours.setLevel(logging.NOTSET)
    if setup.file:
        file = _OurFile(setup.file, mode="a", encoding="utf-8")
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(file)
        ours.setLevel(logging.DEBUG)  # all of ours in the file; other libraries' at the level


def current() -> LogSetup:
    """The settings ``configure`` installed in this process (the defaults if it was not called)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Ours)]
    files = [h for h in root.handlers if isinstance(h, _OurFile)]
    return LogSetup(ours[0].level if ours else logging.WARNING,
                    files[0].baseFilename if files else None)
