"""Imported in the local engine's fork server only (a preload module, see ``forkserver``): every
child the server forks dies with it, from the child's first instruction on.

A worker asks Linux for that itself (``die_with_parent``), but only once it runs its own code: the
child first reads and unpickles its job from the driver, milliseconds to seconds on a busy machine.
A server killed in that window left an orphan that loaded the model (all its memory, a GPU's too)
and only exited when it found the driver's pipe closed. So the after-fork hook sets
``PR_SET_PDEATHSIG`` in the child at once and exits if the server is already gone.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


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
        if os.getppid() != server:  # the server died before the line above: nobody wants us
            os._exit(0)

    os.register_at_fork(before=before, after_in_child=in_child)


install()
