"""How a ``LoaderPool`` starts its processes: ``fork_first`` forks the first ones (an inference
worker's, started before its model runs any thread), and every restart spawns."""

from __future__ import annotations

import os
import sys

import pytest
from loader_hooks import fill_with_pid

from gristmill.loader.messages import BatchTask
from gristmill.loader.pool import LoaderPool
from gristmill.loader.ring import RingSpec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, fork")


def spawned(pid: int) -> bool:
    """Whether ``pid`` runs multiprocessing's spawn entry point (a fork runs the parent's
    command line)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"multiprocessing" in f.read()


def filled_by(pool: LoaderPool, key: tuple[int, int]) -> int:
    pool.tasks.put(BatchTask(key, (b"a", b"b")))
    done = pool.ready.get(timeout=60)
    pid = int(pool.ring.view(done.slot)[0, 0])
    pool.free.put(done.slot)
    return pid


def test_the_first_loaders_are_forked_and_a_restart_spawns() -> None:
    pool = LoaderPool(RingSpec.new(2, 2, (3,), "float32"), fill_with_pid, 1,
                      start_method="spawn", fork_first=True, name="gm-test-loader")
    try:
        pool.start()
        first = filled_by(pool, (0, 0))
        assert first == pool.pids[0] and not spawned(first)
        with open(f"/proc/{first}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()  # our child
        pool.restart(held=())
        second = filled_by(pool, (0, 1))
        assert second == pool.pids[0] != first and spawned(second)
    finally:
        pool.close()
