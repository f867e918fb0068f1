"""A worker the fork server's pipe reports dead (the server was killed) may still be alive for a
moment, its loaders with it: the driver unlinks the worker's names only once the process is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gristmill.engines.local import LocalWorker
from gristmill.loader import shm
from gristmill.loader.ring import new_name

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pidfds are Linux's")


class ReadsDead:
    """A process as the driver sees one whose fork server died: exit code 255 at once."""

    def __init__(self, pid: int) -> None:
        self.pid, self.exitcode = pid, 255

    def join(self, timeout: float | None = None) -> None:
        pass

    def kill(self) -> None:  # multiprocessing sends nothing once it has an exit code
        pass


def test_a_worker_read_as_dead_is_gone_before_its_names_are_unlinked():
    # a "worker" that holds its ring's names and reports whether they still exist when it dies
    ring = new_name()
    segment = shm.Segment(ring, 4096, create=True)
    segment.close()
    lock = shm.NamedContext(f"{ring}-1").Lock()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        handle = LocalWorker(0, ring, process=ReadsDead(alive.pid))
        assert handle.exit_reason() == "lost with the fork server (exit code 255)"
        handle.close()
        # close() returned: the process is gone (killed, as its fork server's death would have)
        # and only then were its names unlinked
        assert alive.wait(timeout=5) == -9
        left = [n for n in os.listdir("/dev/shm") if ring in n]
        assert left == []
    finally:
        alive.kill()
        alive.wait()
        del lock
        shm.sweep(ring)
