"""Imported in the local engine's fork server only (a preload module, see ``forkserver``): every
child the server forks dies with it, from the child's first instruction on.

A worker asks Linux for that itself (``die_with_parent``), but only once it runs its own code: the
child first reads and unpickles its job from the driver, milliseconds to seconds on a busy machine.
A server killed in that window left an orphan that loaded the model (all its memory, a GPU's too)
and only exited when it found the driver's pipe closed. So the after-fork hook sets
``PR_SET_PDEATHSIG`` in the child at once and exits if the server is already gone.

The same window has a quieter cousin: a driver that exits (a bad option, a missing model) while the
server is forking the warm-up probe leaves the child reading its job from a closed pipe. Python's
fork server prints that ``EOFError`` with a whole traceback on the driver's terminal, after the
driver's own one-line error; the hook makes the child's last words silent for that case only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from ..loader.launch import PR_SET_PDEATHSIG


def _quiet_when_orphaned(kind: type[BaseException], value: BaseException, tb: object) -> None:
    """A forked child's uncaught error, as the fork server reports it: an ``EOFError`` means the
    driver left before sending the child its job, which nobody needs to read about."""
    if issubclass(kind, EOFError):
        return
    sys.__excepthook__(kind, value, tb)


def install() -> None:
    """Register the hook in this process (the server): its own forks only, not its children's."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc Linux: workers fall back to their own check
        return
    server = os.getpid()
    forking = [False]  # set in the parent just before a fork; the child inherits the value

    def before() -> None:
        forking[0] = os.getpid() == server

    def in_child() -> None:
        if not forking[0]:  # a fork in a worker (which inherited the hook): not ours to guard
            return
        forking[0] = False
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        sys.excepthook = _quiet_when_orphaned
        if os.getppid() != server:  # the server died before the line above: nobody wants us
            os._exit(0)

    os.register_at_fork(before=before, after_in_child=in_child)


install()
