"""The local engine: one process per worker on this machine, supervised by the driver.

Process tree::

    driver (this process)         plans, hands out shards, watches liveness, builds features.h5
    └── fork server               torch and the worker code imported once (see forkserver.py)
        ├── worker 0              ShardRunner: model loaded once, slot ring, commits shards
        │   ├── loader 0.0 ...    decode into the worker's slots
        └── worker 1 ...

Each worker talks to the driver through its own pipe (a process killed mid-message can corrupt only
its own pipe, never a queue shared with the others). The driver keeps at most ``PREFETCH`` shards in
flight per worker, so a slow worker never holds work that an idle one could take.

Supervision: the driver wakes at least every ``POLL`` seconds. A worker that exits (any signal, OOM,
segfault) or, once ready, sends nothing for ``stall_timeout`` seconds while holding shards (a hung
decoder, a stopped process, a deadlocked device) is killed, its ring is
unlinked, its shards go back to the front of the queue (the one it was computing is charged an
attempt) and a fresh worker takes its place. A shard that fails ``max_attempts`` times is given up
and reported; everything else still runs.

Shutdown order (written once, here): send ``Stop`` to every worker; each worker stops its loaders,
unlinks its ring and exits; after ``JOIN_SECONDS`` the driver kills stragglers and unlinks their
rings by name. On Ctrl-C or SIGTERM the same runs, with in-flight shards abandoned (their temporary
files are removed by the next run; committed shards are untouched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import JobFailed
from ..loader.process import die_with_parent
from ..loader.ring import RingSpec, unlink
from ..sources import InputList
from ..spec import JobSpec
from . import forkserver, turns
from .messages import (
    Receipt,
    ShardFailed,
    ShardTask,
    Stop,
    WorkerCrashed,
    WorkerReady,
)
from .runner import ShardRunner, WorkerPlan, describe_exception
from .shards import ShardQueue

log = logging.getLogger(__name__)

PREFETCH = 2
POLL = 0.25
JOIN_SECONDS = 10.0


def worker_main(spec: JobSpec, inputs_path: str, plan: WorkerPlan, conn: Connection) -> None:
    """Body of a worker process: set up once, then run shards until ``Stop``.

    The driver's end of ``conn`` closes when the driver dies, whatever kills it: the next poll
    then reads EOF and the worker stops (its parent, the fork server, also exits with the driver,
    and PR_SET_PDEATHSIG kills the worker at once).
    """
    die_with_parent()
    runner = ShardRunner(spec, InputList.load(inputs_path), plan)
    ready = False  # a failure before WorkerReady (model, ring, loaders) fails the whole job
    try:
        start = time.perf_counter()
        runner.setup()
        conn.send(WorkerReady(plan.index, os.getpid(), plan.device, plan.threads, plan.loaders,
                              time.perf_counter() - start))
        ready = True
        while True:
            while conn.poll():
                message = conn.recv()
                if isinstance(message, Stop):
                    return
                runner.submit(message)
            if runner.inflight:
                for message in runner.step(timeout=0.1):
                    conn.send(message)
            else:
                conn.poll(0.5)
    except Exception as exc:
        log.debug("worker %d failed", plan.index, exc_info=True)
        with contextlib.suppress(OSError):
            conn.send(WorkerCrashed(plan.index, "run" if ready else "setup",
                                    describe_exception(exc)))
    finally:
        runner.teardown()


@dataclass
class _Worker:
    plan: WorkerPlan
    process: Any
    conn: Connection
    inflight: list[ShardTask] = field(default_factory=list)
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False


class LocalEngine:
    """Runs a prepared job's pending shards on local worker processes."""

    def __init__(self, spec: JobSpec, inputs_path: str, workers: list[WorkerPlan],
                 on_event: Callable[[Any], None]) -> None:
        self.spec, self.inputs_path, self.plans = spec, inputs_path, workers
        self.on_event = on_event
        self.ctx = forkserver.context()
        self.workers: list[_Worker] = []
        self.queue = ShardQueue((), spec.max_attempts, on_event)
        self.deaths = 0

    def _start(self, plan: WorkerPlan) -> _Worker:
        item_shape = self.spec.preprocess.item_shape()
        plan.ring_name = RingSpec.new(plan.slots, plan.batch_size, item_shape).name
        ours, theirs = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker_main, name=f"gristmill-worker-{plan.index}",
                                   args=(self.spec, self.inputs_path, plan, theirs),
                                   daemon=False)
        process.start()
        theirs.close()
        return _Worker(plan, process, ours)

    def run(self, shards: list[Any]) -> dict[int, str]:
        """Run ``shards``; return the ones given up, with their reasons."""
        self.queue = ShardQueue(shards, self.spec.max_attempts, self.on_event)
        count = max((p.turns for p in self.plans), default=0)
        folder = turns.make(count) if count else ""
        for plan in self.plans:
            plan.turns_dir = folder
        self.workers = []
        try:
            for plan in self.plans:
                self.workers.append(self._start(plan))
            while self.queue or any(w.inflight for w in self.workers):
                self._assign()
                conns = [w.conn for w in self.workers]
                for conn in wait(conns, timeout=POLL):
                    worker = next(w for w in self.workers if w.conn is conn)
                    self._drain(worker)
                self._supervise()
        finally:
            self._shutdown()
            if folder:
                turns.remove(folder)
        return self.queue.failed

    def _assign(self) -> None:
        for worker in self.workers:
            while self.queue and len(worker.inflight) < PREFETCH:
                task = self.queue.pop()
                worker.conn.send(task)
                worker.inflight.append(task)
                worker.last_seen = time.monotonic()

    def _drain(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            pass  # the process is gone; _supervise replaces it

    def _handle(self, worker: _Worker, message: Any) -> None:
        worker.last_seen = time.monotonic()
        if isinstance(message, Receipt | ShardFailed):
            task = next((t for t in worker.inflight if t.shard.id == message.shard), None)
            if task is not None:
                worker.inflight.remove(task)
            if isinstance(message, ShardFailed) and task is not None:
                self.queue.retry(task, message.reason)
        elif isinstance(message, WorkerReady):
            worker.ready = True
        elif isinstance(message, WorkerCrashed) and message.where == "setup":
            raise JobFailed(f"worker {message.worker} could not start: {message.error}")
        self.on_event(message)


    def _supervise(self) -> None:
        now = time.monotonic()
        for i, worker in enumerate(self.workers):
            # counted from WorkerReady on: loading a model may take longer than a batch should
            stalled = (worker.ready and worker.inflight
                       and now - worker.last_seen > self.spec.stall_timeout)
            if worker.process.exitcode is None and not stalled:
                continue
            if stalled:
                log.warning("worker %d made no progress for %.0f s; replacing it",
                            worker.plan.index, self.spec.stall_timeout)
                worker.process.kill()
            worker.process.join(timeout=5)
            self._drain(worker)
            code = worker.process.exitcode
            log.warning("worker %d (pid %s) died with exit code %s; replacing it",
                        worker.plan.index, worker.process.pid, code)
            self.deaths += 1
            if self.deaths > 10 * len(self.workers) + self.spec.max_attempts:
                raise JobFailed(f"workers died {self.deaths} times (last exit code {code})")
            unlink(worker.plan.ring_name)
            worker.conn.close()
            self.queue.give_back(worker.inflight, f"worker died (exit code {code})")
            self.workers[i] = self._start(worker.plan)

    def _shutdown(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(Stop())
        deadline = time.monotonic() + JOIN_SECONDS
        for worker in self.workers:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            unlink(worker.plan.ring_name)
            worker.conn.close()


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


def raise_on_sigterm() -> Callable[[], None]:
    """Route SIGTERM to KeyboardInterrupt in the main thread; returns a function that undoes it."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


