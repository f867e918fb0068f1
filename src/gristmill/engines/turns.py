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
releases it when its holder dies, so a killed worker never keeps a turn. A waiting worker tries
every turn every few milliseconds rather than sleeping on one: a holder that hangs (until the
driver replaces it as stalled) then holds up nobody but itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def make(count: int) -> str:
    """The driver: a new folder of ``count`` turn files; ``remove`` it when the job ends."""
    folder = tempfile.mkdtemp(prefix="gristmill-turns-")
    for i in range(count):
        Path(folder, str(i)).touch()
    return folder


def remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


POLL_SECONDS = 0.005  # a forward pass takes tens of milliseconds or more


class Turns:
    """A worker's side: ``with turns.take(): ...`` runs once a turn is free."""

    def __init__(self, folder: str, count: int) -> None:
        self.files = [os.path.join(folder, str(i)) for i in range(count)]

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        fds = [os.open(path, os.O_RDWR) for path in self.files]
        try:
            while (held := next((fd for fd in fds if _try_lock(fd)), None)) is None:
                time.sleep(POLL_SECONDS)
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
