"""``python -m gristmill`` and the ``gristmill`` command: ``cli.main``, then a quick exit."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys


def command() -> None:
    """Run the command line and leave without the interpreter's teardown.

    Why: once a job is done every file it wrote is fsynced and closed, yet tearing down an
    interpreter that imported torch takes another half second (a third of a small job's wall
    time). The exit handlers still run first (logging's flush, multiprocessing's, Ray's
    shutdown), then the process ends with ``main``'s exit status.
    """
    from .cli import main

    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    command()
