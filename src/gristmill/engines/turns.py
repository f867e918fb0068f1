"""Turns on the cores, for CPU workers that outnumber them (``--workers`` × ``--threads`` > cores).

Such workers cannot all compute at once anyway; what each would keep is its forward pass's
activation heap, which the tuned allocator holds between batches (about 125 MB per worker for the
ResNet-50 benchmark model at batch 8). With turns, a worker runs its model only while it holds one
of ``count`` turns (``cores // threads``), and gives its free heap back to the system before it
passes the turn on, so only the workers computing hold activations (measured with 4 workers on 2
cores: total memory 1.73x that of one worker without turns, under 1.5x with them, for about 5 %
less throughput than four workers competing for the cores). Jobs whose workers fit the cores
(every default budget) have no turns.

A turn is an exclusive ``flock`` on one of ``count`` files in a folder the driver makes: the kernel
releases it when its holder dies, so a killed worker never keeps a turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator


def make(count: int) -> str:
    """The driver: a new folder of ``count`` turn files; ``remove`` it when the job ends."""
    folder = tempfile.mkdtemp(prefix="gristmill-turns-")
    for i in range(count):
        with open(os.path.join(folder, str(i)), "w"):
            pass
    return folder


def remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class Turns:
    """A worker's side: ``with turns.take(): ...`` runs once a turn is free."""

    def __init__(self, folder: str, count: int, index: int) -> None:
        self.files = [os.path.join(folder, str(i)) for i in range(count)]
        self.home = index % count  # where it waits when every turn is taken: spreads the waiters

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        fds = [os.open(path, os.O_RDWR) for path in self.files]
        try:
            held = next((fd for fd in fds if _try_lock(fd)), None)
            if held is None:
                held = fds[self.home]
                fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)
        finally:
            for fd in fds:
                os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
