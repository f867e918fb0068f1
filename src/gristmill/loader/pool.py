"""Loader processes, their queues and slot ring, and the order they are stopped in.

Used by a training ``Loader`` and by each inference worker (``engines.runner.ShardRunner``); runs
in the process that owns them. ``LoaderPool`` starts ``loader_main`` processes that
fill slots of one ``SlotRing``. Start method: "fork" (the Linux default, as for DataLoader) lets the
loaders share the parent's already-imported pages, so each costs only what it writes (a spawned
loader re-imports numpy and Pillow: ~25 MB more each); loaders never touch torch or CUDA, and the
queues are made before the fork and reset by ``multiprocessing`` after it. "spawn" is the choice
when the parent runs threads that may hold locks a child would need. The owner
puts ``BatchTask``s on ``tasks``, takes ``Filled`` from ``ready``, puts slot ids back on ``free``.
The pool holds no reference to the ``Loader``, so ``weakref.finalize(loader, pool.close)`` can free
everything when the loader is garbage-collected or the interpreter exits.

NOTE on shutdown (``close``), the order matters:
  1. one STOP per process on ``tasks``: a loader waiting for a task exits at once; a loader waiting
     for a free slot gives up within ``POLL_SECONDS`` only once its parent is gone, so
  2. join with a short deadline, then SIGKILL what is left (a loader holds nothing that needs
     flushing: its output only ever goes to a slot nobody will read);
  3. close the queues without joining their feeder threads (a killed reader can leave a pipe full,
     and joining the feeder would then hang the owner);
  4. unlink the ring last, when no process writes to it any more. Loaders only attached to it; the
     owner's unlink removes the name, and the memory goes when the last mapping does.
  5. (spawn) unlink the queues' semaphores by name: they are named after the ring and not
     registered with ``multiprocessing``'s resource tracker (see ``shm``), so nothing reports them
     leaked, and a supervisor can unlink those of a killed owner by the ring's name.
A restart after a death (``restart``) does 2-3 and 5 and starts new queues and processes on the same
ring, because a process killed inside a queue operation can leave that queue's lock held forever.
With ``cleaner=True`` the pool also starts a ``shm.Cleaner`` for its ring: nothing else unlinks the
ring of an owner that is killed (the local engine's driver runs one for all its workers instead).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Iterable
from typing import Any

from . import shm
from .messages import STOP
from .process import loader_main
from .ring import RingSpec, SlotRing

log = logging.getLogger(__name__)


class LoaderPool:
    """``processes`` loader processes filling the slots of one ring with ``fill``."""

    def __init__(self, ring_spec: RingSpec, fill: Any, processes: int, *,
                 start_method: str | None = None, name: str = "gristmill-train-loader",
                 cleaner: bool = False, fork_first: bool = False) -> None:
        if start_method is None:
            start_method = "fork" if sys.platform == "linux" else "spawn"
        self.start_method = start_method
        # the first start forks whatever ``start_method`` says: the owner starts its pool before
        # it runs any thread a fork could copy mid-lock, and its later restarts use the method
        self.fork_first = fork_first and "fork" in mp.get_all_start_methods()
        self.ctx: Any = mp.get_context(start_method)
        self.cleaner = shm.Cleaner(ring_spec.name) if cleaner else None
        self.ring: SlotRing | None = SlotRing(ring_spec, create=True)
        self.fill = fill
        self.name = name
        self.count = processes
        self.procs: list[Any] = []
        self.tasks: Any = None
        self.free: Any = None
        self.ready: Any = None
        self.incarnation = 0  # bumped by every start: slot ids from before a restart are void

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, held: Iterable[int] = ()) -> None:
        """New queues and processes; every slot not in ``held`` is free."""
        assert self.ring is not None, "pool is closed"
        self.incarnation += 1
        shm.quiet_tracker()
        if self.cleaner is not None:
            self.cleaner.ensure()
        if self.fork_first and self.incarnation == 1:
            self.ctx = mp.get_context("fork")
        elif self.start_method == "spawn":  # fork: the semaphores have no name to leak
            self.ctx = shm.NamedContext(f"{self.ring.spec.name}-{self.incarnation}")
        self.tasks, self.free, self.ready = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Queue()
        held = set(held)
        for slot in range(self.ring.spec.slots):
            if slot not in held:
                self.free.put(slot)
        self.procs = [
            self.ctx.Process(target=loader_main, name=f"{self.name}-{i}",
                             args=(self.ring.spec, self.fill, self.tasks, self.free, self.ready,
                                   os.getpid()), daemon=True)
            for i in range(self.count)
        ]
        # Frozen objects are never traversed by the children's garbage collector, which would
        # otherwise write to (and so copy) every page of the parent's objects it inherited.
        gc.freeze()
        try:
            for p in self.procs:
                p.start()
        finally:
            gc.unfreeze()

    def dead(self) -> list[Any]:
        return [p for p in self.procs if p.exitcode is not None]

    def restart(self, held: Iterable[int]) -> None:
        """Kill every loader and start afresh; slots in ``held`` keep their (delivered) content."""
        self._stop(kill=True)
        self.start(held)

    def stop(self) -> None:
        """Stop the processes (steps 1-3 of the NOTE), keeping the ring for its owner."""
        self._stop(kill=False)

    def _stop(self, *, kill: bool) -> None:
        try:
            if not kill and self.tasks is not None:
                with contextlib.suppress(queue.Empty, OSError, ValueError):
                    while True:  # tasks queued ahead of STOP would wait for slots nobody frees
                        self.tasks.get_nowait()
                for _ in self.procs:
                    self.tasks.put(STOP)
            deadline = time.monotonic() + (0.0 if kill else 2.0)
            for p in self.procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            for q in (self.tasks, self.free, self.ready):
                if q is not None:
                    q.cancel_join_thread()
                    q.close()
        finally:  # whatever failed above, no name of this incarnation outlives it
            self.procs = []
            self.tasks = self.free = self.ready = None
            if isinstance(self.ctx, shm.NamedContext):
                self.ctx.unlink()

    def close(self) -> None:
        """Stop the processes and unlink the ring (idempotent; see the shutdown NOTE)."""
        try:
            self._stop(kill=False)
        except Exception:  # closing must never raise: it runs from finalizers too
            log.debug("error stopping loaders", exc_info=True)
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.cleaner is not None:
            self.cleaner.close()
            self.cleaner = None
