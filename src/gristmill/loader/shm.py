"""Shared memory and semaphores that gristmill names, and unlinks, itself.

Python's ``multiprocessing`` registers every named segment and semaphore with its resource
tracker: a helper process that unlinks, and reports as "leaked", whatever is left when every
process using it has exited. That helper is one more process a job can lose: killed, it forgets
every name (they stay in ``/dev/shm``), and every process that then spawns a child relaunches it
with a warning. So gristmill's own resources bypass it:

- a ring's segment is created with ``shm_open`` directly (``Segment``), not registered;
- the semaphores of a loader pool's queues are named after the ring they serve,
  ``<ring>-<incarnation>-<n>`` (``context``), not registered, and unlinked by the pool when it
  stops its loaders;
- so every name a worker makes starts with its ring's name, and whoever supervises a process
  unlinks what it left by that prefix (``sweep``) once it is gone;
- a ``Cleaner`` (a 20-line process reading a pipe) sweeps its owner's prefix when the owner dies
  without doing so, which is the one job the resource tracker did for us.

Python still starts its tracker (spawning a child asks for it); ``quiet_tracker`` keeps its
"process died unexpectedly, relaunching" warning off stderr, since nothing of ours can leak by it.
"""

from __future__ import annotations

import _multiprocessing
import _posixshmem
import contextlib
import itertools
import logging
import mmap
import os
import subprocess
import sys
import warnings
from multiprocessing import synchronize
from typing import Any

from .launch import GuardedSpawnContext

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"  # where Linux keeps POSIX segments ("NAME") and semaphores ("sem.NAME")


class Segment:
    """A POSIX shared-memory segment by name; ``buf`` is its memory. The creator unlinks it."""

    def __init__(self, name: str, size: int = 0, *, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size)
        except BaseException:
            if create:
                unlink_segment(name)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        """Unmap; raises BufferError while arrays still view the memory."""
        self.buf.release()
        self._mmap.close()


def unlink_segment(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name)


def unlink_semaphore(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _multiprocessing.sem_unlink(name)


def sweep(prefix: str) -> list[str]:
    """Unlink every segment and semaphore whose name starts with ``prefix``; returns them."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:  # no /dev/shm (not Linux): owners unlink their own names only
        return []
    gone = []
    for entry in entries:
        if entry.startswith(prefix):
            unlink_segment(entry)
        elif entry.startswith("sem." + prefix):
            unlink_semaphore("/" + entry[4:])
        else:
            continue
        gone.append(entry)
    return gone


# -- semaphores for spawned loaders ----------------------------------------------------------------
class _Lock(synchronize.Lock):
    def __init__(self, name: str) -> None:  # SemLock.__init__ minus the tracker
        self._is_fork_ctx = False
        self._semlock = _multiprocessing.SemLock(synchronize.SEMAPHORE, 1, 1, name, False)
        self._make_methods()


class _BoundedSemaphore(synchronize.BoundedSemaphore):
    def __init__(self, value: int, name: str) -> None:
        self._is_fork_ctx = False
        self._semlock = _multiprocessing.SemLock(synchronize.SEMAPHORE, value, value, name,
                                                 False)
        self._make_methods()


class NamedContext(GuardedSpawnContext):
    """A spawn context whose queues' semaphores are named ``/<prefix>-<n>`` and not tracked, and
    whose processes die with their parent from their first instruction (``launch``).

    ``names`` lists them for ``unlink``; call it once no process uses them any more.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.names: list[str] = []
        self._count = itertools.count()

    def _name(self) -> str:
        name = f"/{self.prefix}-{next(self._count)}"
        unlink_semaphore(name)  # a name left by a killed process of the same pid and ring
        self.names.append(name)
        return name

    def Lock(self) -> Any:  # multiprocessing's names
        return _Lock(self._name())

    def BoundedSemaphore(self, value: int = 1) -> Any:
        return _BoundedSemaphore(value, self._name())

    def unlink(self) -> None:
        for name in self.names:
            unlink_semaphore(name)
        self.names = []


# -- the cleaner -----------------------------------------------------------------------------------
# Runs in ``python -I -S``: it must start in milliseconds and import nothing of ours. It ignores
# Ctrl-C (its owner's cleanup may need it after) and reads stdin to its end: "done" is an owner
# that cleaned up itself; a bare EOF (every copy of the write end closed) is an owner that died.
# Then it sweeps twice: a child of the owner that was creating a segment as the owner died is
# itself killed a moment later (PR_SET_PDEATHSIG).
_CLEANER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.stdin.buffer.read() == b"done":
    sys.exit(0)
prefix = sys.argv[1]
for attempt in range(2):
    time.sleep(attempt)
    for entry in os.listdir("/dev/shm"):
        name = entry[4:] if entry.startswith("sem.") else entry
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join("/dev/shm", entry))
            except OSError:  # gone already (a process of the owner unlinked it meanwhile)
                continue
"""


class Cleaner:
    """A process that sweeps ``prefix`` once its owner (this process) is gone; see above."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.ensure()

    def ensure(self) -> None:
        """Start it, or start it again if it was killed (its pipe: nothing was lost)."""
        if not os.path.isdir(SHM_DIR):
            return
        if self.proc is not None:
            if self.proc.poll() is None:
                return
            self.restarts += 1
            log.info("the shared-memory cleaner (pid %d) died; restarted", self.proc.pid)
            self._drop()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CLEANER, self.prefix], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)

    def _drop(self, message: bytes = b"") -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(message)
                self.proc.stdin.close()

    def close(self) -> None:
        """The owner cleaned up: the cleaner exits without sweeping."""
        self._drop(b"done")
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
            self.proc = None


def quiet_tracker() -> None:
    """Keep the resource tracker's relaunch warning off stderr (see module docstring)."""
    warnings.filterwarnings("ignore", message="resource_tracker: process died unexpectedly")
