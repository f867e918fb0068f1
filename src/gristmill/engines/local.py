"""The local engine: one process per worker on this machine, supervised by the driver.

Process tree::

    driver (this process)         plans, supervises (supervisor.py), builds features.h5
    ├── fork server               the model's framework and the worker code imported once
    │   ├── worker 0              ShardRunner: model loaded once, slot ring, commits shards
    │   │   ├── loader 0.0 ...    decode into the worker's slots
    │   └── worker 1 ...
    ├── resource tracker          Python's; started by multiprocessing, holds nothing of ours
    └── shm cleaner               unlinks the job's rings by name if the driver is killed

This module is the local worker handle: a process with its own pipe to the driver (a process
killed mid-message can corrupt only its own pipe, never a queue shared with the others). The loop
that hands out shards and replaces lost workers is ``supervisor.Supervisor``, shared with Ray.
The job's ``Backend``, which starts the fork server before the job is prepared, is
``local_backend.LocalBackend``; it imports this module (the runner, the sources) only to build the
engine of the prepared job.

Every process of the tree can be killed at any moment and costs at most a restart:

- a worker or loader: replaced (by the supervisor or by its worker); the driver unlinks a dead
  worker's ring and its semaphores by name (``ring.unlink``), once the process is really gone
  (``LocalWorker``);
- the fork server: its workers die with it (``PR_SET_PDEATHSIG``) and are replaced; the next start
  relaunches the server. A start that fails (the server died mid-request: ``EOFError``) is a lost
  worker like any other; after ``SERVER_FAILURES`` failed starts in a row, workers are spawned
  instead, with one warning line;
- the resource tracker: relaunched by ``multiprocessing`` when next needed, its warning silenced
  (``shm.quiet_tracker``): no resource of ours is registered with it;
- the cleaner: restarted between rounds (``tend``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from .. import logs
from ..loader import shm
from ..loader.launch import die_with_parent
from ..loader.ring import PREFIX, new_name, unlink
from ..logs import LogSetup
from ..plan import Shard
from ..prepared import WorkerPlan
from ..sources import InputList
from ..spec import JobSpec
from . import forkserver, turns
from .messages import ShardTask, Stop, WorkerCrashed, WorkerReady
from .runner import ShardRunner, describe_exception
from .supervisor import Supervisor

log = logging.getLogger(__name__)

SERVER_FAILURES = 3  # failed starts in a row before workers are spawned instead of forked


def worker_main(spec: JobSpec, inputs_path: str, plan: WorkerPlan, conn: Connection,
                log_setup: LogSetup | None = None) -> None:
    """Body of a worker process: set up once, then run shards until ``Stop``.

    The driver's end of ``conn`` closes when the driver dies, whatever kills it: the next poll
    then reads EOF and the worker stops (its parent, the fork server, also exits with the driver,
    and PR_SET_PDEATHSIG kills the worker at once).
    """
    die_with_parent()
    forkserver.release_server()
    logs.configure(log_setup or LogSetup())
    shm.quiet_tracker()
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
    except (EOFError, BrokenPipeError, ConnectionResetError):
        log.debug("worker %d: the driver's pipe closed; stopping", plan.index)
    except Exception as exc:
        log.debug("worker %d failed", plan.index, exc_info=True)
        with contextlib.suppress(OSError):
            conn.send(WorkerCrashed(plan.index, "run" if ready else "setup",
                                    describe_exception(exc)))
    finally:
        try:
            runner.teardown()
        except Exception:  # exiting anyway: the driver unlinks what is left by name
            log.debug("worker %d: teardown failed", plan.index, exc_info=True)


def exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    if code == 255:  # what the fork server's client reports when the server itself is gone
        return "lost with the fork server (exit code 255)"
    return f"exit code {code}"


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+), readable once the process has exited; None elsewhere
    or if it is already gone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class LocalWorker:
    """A worker process and the driver's end of its pipe (a ``WorkerHandle``).

    ``pidfd`` watches the process itself: a forked worker's ``exitcode`` comes from its fork
    server's pipe, so when the server is killed the worker reads as dead (255) while the kernel
    is still tearing it down, and its loaders are killed only once it is gone. A loader still
    starting then must not find its queues' names unlinked: ``close`` unlinks them only after.
    """

    def __init__(self, index: int, ring_name: str, process: Any = None, conn: Any = None,
                 failed: str | None = None) -> None:
        self.index, self.ring_name = index, ring_name
        self.process, self.conn, self.failed = process, conn, failed
        self.pidfd = open_pidfd(process.pid) if process is not None else None

    @property
    def pid(self) -> int:
        return (self.process.pid or 0) if self.process is not None else 0

    def send(self, task: ShardTask) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(task)

    def receive(self) -> list[Any]:
        messages: list[Any] = []
        try:
            while self.conn is not None and self.conn.poll():
                messages.append(self.conn.recv())
        except Exception:  # EOF or a message cut short by a kill: the process is gone
            log.debug("worker %d: pipe closed", self.index, exc_info=True)
            self._close_pipe()
        return messages

    def exit_reason(self) -> str | None:
        if self.failed is not None:
            return self.failed
        code = self.process.exitcode
        return None if code is None else exit_reason(code)

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self.process.kill()

    def stop(self) -> None:
        self.send(Stop())

    def join(self, timeout: float) -> bool:
        if self.process is None:
            return True
        with contextlib.suppress(OSError, ValueError):
            self.process.join(timeout=timeout)
        return self.process.exitcode is not None

    def close(self) -> None:
        if self.process is not None and not self.join(0):
            self.kill()
            self.join(5)
        self._wait_gone(5.0)
        self._close_pipe()
        unlink(self.ring_name)

    def _wait_gone(self, timeout: float) -> None:
        """Return once the process has really exited (see the class docstring)."""
        if self.pidfd is None:
            return
        try:
            if not select.select([self.pidfd], [], [], 0)[0]:
                with contextlib.suppress(ProcessLookupError):  # dying already: make it so
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                select.select([self.pidfd], [], [], timeout)
        finally:
            os.close(self.pidfd)
            self.pidfd = None

    def _close_pipe(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class LocalLauncher:
    """Starts ``LocalWorker``s from the fork server (a ``Launcher``)."""

    setup_timeout = None  # a local model load has no deadline; a hung one is visible at once

    def __init__(self, spec: JobSpec, inputs_path: str, plans: list[WorkerPlan]) -> None:
        self.spec, self.inputs_path, self.plans = spec, inputs_path, plans
        self.count = len(plans)
        self.ctx = forkserver.context(forkserver.server_modules(spec))
        self.failures = 0
        self.log_setup = logs.current()
        shm.quiet_tracker()
        self.cleaner = shm.Cleaner(f"{PREFIX}{os.getpid()}-")
        turns_count = max((p.turns for p in plans), default=0)
        self.turns_dir = turns.make(turns_count) if turns_count else ""

    def start(self, index: int) -> LocalWorker:
        plan = self.plans[index]
        # only the name: the worker knows the item shape (an image's, or a caption's tokens)
        plan = dataclasses.replace(plan, turns_dir=self.turns_dir, ring_name=new_name(),
                                   fork_loaders=True)
        ours, theirs = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker_main, name=f"gristmill-worker-{index}",
                                   args=(self.spec, self.inputs_path, plan, theirs,
                                         self.log_setup), daemon=False)
        try:
            process.start()
        except Exception as exc:  # the fork server died mid-request (EOFError), or the spawn
            log.debug("worker %d could not start", index, exc_info=True)
            ours.close()
            self._failed_start()
            return LocalWorker(index, plan.ring_name, failed=f"could not start: "
                                                             f"{describe_exception(exc)}")
        finally:
            theirs.close()
        self.failures = 0
        return LocalWorker(index, plan.ring_name, process, ours)

    def _failed_start(self) -> None:
        self.failures += 1
        if self.failures >= SERVER_FAILURES and self.ctx.get_start_method() == "forkserver":
            log.warning("the fork server failed %d times in a row; spawning workers instead "
                        "(each imports torch itself: slower to start)", self.failures)
            self.ctx = forkserver.spawn_context()

    def wait(self, handles: Sequence[LocalWorker], timeout: float) -> list[LocalWorker]:
        ends: dict[Any, LocalWorker] = {h.conn: h for h in handles if h.conn is not None}
        for h in handles:  # a death wakes the loop at once, not at the next poll
            if h.process is not None:
                with contextlib.suppress(AttributeError, ValueError):
                    ends[h.process.sentinel] = h
        try:
            ready = wait(list(ends), timeout=timeout)
        except OSError:  # an end closed under us: let every handle look
            return list(handles)
        return list({id(ends[r]): ends[r] for r in ready}.values())

    def tend(self) -> None:
        self.cleaner.ensure()

    def close(self) -> None:
        if self.turns_dir:
            turns.remove(self.turns_dir)
        self.cleaner.close()


class LocalEngine:
    """Runs a prepared job's pending shards on local worker processes (an ``Engine``)."""

    def __init__(self, spec: JobSpec, inputs_path: str, workers: list[WorkerPlan],
                 on_event: Callable[[Any], None]) -> None:
        self.spec, self.inputs_path, self.plans = spec, inputs_path, workers
        self.on_event = on_event

    def run(self, shards: Sequence[Shard]) -> dict[int, str]:
        """Run ``shards``; return the ones given up, with their reasons."""
        launcher = LocalLauncher(self.spec, self.inputs_path, self.plans)
        return Supervisor(launcher, max_attempts=self.spec.max_attempts,
                          stall_timeout=self.spec.stall_timeout,
                          on_event=self.on_event).run(shards)
