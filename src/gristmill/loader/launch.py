"""How spawned loader processes start: their parent's death is covered before they read a byte.

``multiprocessing``'s spawn starts ``python -c "...spawn_main(...)"`` and only then writes the
child's job (the pickled process object) into a pipe. A parent killed between the two (a worker
lost with its fork server while it restarted its loaders, say) leaves the child reading an empty
pipe, and Python prints that ``EOFError`` with a whole traceback on the job's terminal, or part of
one if the child is killed while it prints. So a loader runs ``child_main`` instead: it asks Linux
to kill it with its parent (``PR_SET_PDEATHSIG``) and exits at once if the parent is already gone,
both before reading anything; an EOF while it reads (the parent died in that moment, its kill
signal not yet delivered) is a quiet exit too. Everything else is ``spawn_main`` as Python runs it,
except the end: once the process's exit handlers have run it leaves with ``os._exit``, as a forked
child does, without the interpreter's teardown that its parent, joining it, would wait for.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import io
import os
import signal
import sys
from multiprocessing import context, popen_spawn_posix, reduction, resource_tracker, spawn, util
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: parent polling remains
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def child_main(tracker_fd: int, pipe_handle: int, parent: int) -> None:
    """The spawned child's first code (see the module docstring)."""
    die_with_parent()
    if os.getppid() != parent:
        os._exit(0)
    try:
        spawn.spawn_main(tracker_fd=tracker_fd, pipe_handle=pipe_handle)
    except EOFError:  # only reading the job raises it here: the loop's own errors stay inside
        os._exit(0)
    except SystemExit as done:
        # its process has ended (queues flushed, streams too): the interpreter's teardown
        # (numpy, Pillow: 20-30 ms) would only hold up the parent joining it; a forked child,
        # which multiprocessing ends with os._exit, skips it as well
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        os._exit(done.code if isinstance(done.code, int) else 0 if done.code is None else 1)


class GuardedPopen(popen_spawn_posix.Popen):
    """Python's POSIX spawn with ``child_main`` as the child's command."""

    def _launch(self, process_obj: Any) -> None:
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        job = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(spawn.get_preparation_data(process_obj._name), job)
            reduction.dump(process_obj, job)
        finally:
            context.set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            program = (f"from gristmill.loader.launch import child_main; "
                       f"child_main({tracker_fd}, {child_r}, {os.getpid()})")
            command = [spawn.get_executable(), *util._args_from_interpreter_flags(),
                       "-c", program, "--multiprocessing-fork"]
            self._fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(spawn.get_executable(), command, self._fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(job.getbuffer())
        finally:
            self.finalizer = util.Finalize(self, util.close_fds,
                                           [fd for fd in (parent_r, parent_w) if fd is not None])
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class GuardedProcess(context.SpawnProcess):
    """A spawned process started through ``GuardedPopen``."""

    @staticmethod
    def _Popen(process_obj: Any) -> GuardedPopen:  # multiprocessing's name
        return GuardedPopen(process_obj)


class GuardedSpawnContext(context.SpawnContext):
    """A spawn context whose processes start through ``GuardedPopen``."""

    Process = GuardedProcess
