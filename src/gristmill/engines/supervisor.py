"""The supervisor: the driver's loop for every engine, over the worker handles of ``base.py``.

Scheduling: a worker gets shards once it is ready (``WorkerReady``), at most ``PREFETCH`` in flight
(so a slow worker never holds work an idle one could take: the next shard's first batches decode
while the current one finishes). The loop wakes at least every ``POLL`` seconds.

Faults: a worker whose handle says it is gone (any signal, OOM, a segfault, a lost Ray node, a
start that failed because the fork server was killed) or that, once ready, sends nothing for
``stall_timeout`` seconds while holding shards (a hung decoder, a stopped process, a deadlocked
device) is killed and replaced under the same index. Its shards go back to the front of the queue
and the one it was computing is charged an attempt (``ShardQueue.give_back``); a shard that fails
``max_attempts`` times is given up and reported while everything else runs. Each replacement is
one ``WorkerReplaced`` event and one log line::

    worker 1 (pid 812) died (killed by SIGKILL); replaced; shard-000007 re-queued (attempt 2 of 3)

The death bound: more than ``10 * workers + max_attempts`` replacements in one job means the cause
is not one worker (a model that crashes its process, no memory left): the job fails with
``JobFailed``. A worker whose setup raised (the model cannot load) fails the job at once, since
every replacement would fail the same way; so does having no ready worker for the launcher's
``setup_timeout`` (Ray: every node lost). Committed shards stay; a rerun resumes. A ``fatal``
``ShardFailed`` (a container changed since it was listed: no attempt can succeed) hands out
nothing more, lets the shards in flight commit, then raises ``SourceChanged``.

Shutdown order (written once, here): ask every worker to stop (it stops its loaders, frees its ring
and exits); wait up to ``JOIN_SECONDS`` for all of them; close every handle (which kills a
straggler and unlinks what it left, by name); close the launcher. On Ctrl-C or SIGTERM the same
runs, with in-flight shards abandoned (their temporary files are removed by the next run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import JobFailed, SourceChanged
from ..plan import Shard
from .base import Launcher, WorkerHandle
from .messages import Receipt, ShardFailed, ShardTask, WorkerCrashed, WorkerReady, WorkerReplaced
from .shards import ShardQueue

log = logging.getLogger(__name__)

PREFETCH = 2
POLL = 0.25
JOIN_SECONDS = 10.0


@dataclass
class _Slot:
    handle: WorkerHandle
    inflight: list[ShardTask] = field(default_factory=list)
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False


class Supervisor:
    """Runs shards on the workers of ``launcher`` (see module docstring)."""

    def __init__(self, launcher: Launcher, *, max_attempts: int, stall_timeout: float,
                 on_event: Callable[[Any], None]) -> None:
        self.launcher = launcher
        self.max_attempts, self.stall_timeout = max_attempts, stall_timeout
        self.on_event = on_event
        self.queue = ShardQueue((), max_attempts, on_event)
        self.slots: list[_Slot] = []
        self.replaced = 0
        self.last_ready = time.monotonic()
        self.fatal = ""  # why the job must stop once the shards in flight are done

    def run(self, shards: Sequence[Shard]) -> dict[int, str]:
        """Run ``shards``; return the ones given up, with their reasons."""
        self.queue = ShardQueue(shards, self.max_attempts, self.on_event)
        self.slots = []
        try:
            for index in range(self.launcher.count):
                self.slots.append(_Slot(self.launcher.start(index)))
            self.last_ready = time.monotonic()
            while self.queue or any(s.inflight for s in self.slots):
                self._assign()
                for handle in self.launcher.wait([s.handle for s in self.slots], POLL):
                    slot = next((s for s in self.slots if s.handle is handle), None)
                    if slot is not None:
                        self._drain(slot)
                self._supervise()
                self.launcher.tend()
        finally:
            self._shutdown()
        if self.fatal:
            raise SourceChanged(self.fatal)
        return self.queue.failed

    def _assign(self) -> None:
        for slot in self.slots:
            while slot.ready and self.queue and len(slot.inflight) < PREFETCH:
                task = self.queue.pop()
                slot.handle.send(task)
                slot.inflight.append(task)
                slot.last_seen = time.monotonic()

    def _drain(self, slot: _Slot) -> None:
        messages = slot.handle.receive()
        if messages:  # an empty poll proves only that a process lives, not that it progresses
            slot.last_seen = time.monotonic()
        for message in messages:
            self._handle(slot, message)

    def _handle(self, slot: _Slot, message: Any) -> None:
        if isinstance(message, Receipt | ShardFailed):
            task = next((t for t in slot.inflight if t.shard.id == message.shard), None)
            if task is not None:
                slot.inflight.remove(task)
                if isinstance(message, ShardFailed) and message.fatal:
                    # no attempt can succeed: hand out nothing more, let the shards in flight
                    # commit, then stop the job (``run``)
                    self.fatal = self.fatal or message.reason
                    self.queue.pending.clear()
                    self.on_event(message)
                    return
                if isinstance(message, ShardFailed):
                    self.queue.retry(task, message.reason)
        elif isinstance(message, WorkerReady):
            slot.ready = True
        elif isinstance(message, WorkerCrashed) and message.where == "setup":
            raise JobFailed(f"worker {message.worker} could not start: {message.error}")
        self.on_event(message)

    def _supervise(self) -> None:
        now = time.monotonic()
        timeout = self.launcher.setup_timeout
        if any(s.ready for s in self.slots):
            self.last_ready = now
        elif timeout is not None and now - self.last_ready > timeout:
            raise JobFailed(f"no worker was running for {timeout:.0f} s (nodes lost or no "
                            "resources to place one); rerun to resume")
        for i, slot in enumerate(self.slots):
            reason = slot.handle.exit_reason()
            if reason is not None:
                self._drain(slot)  # receipts it sent before it went
                self._replace(i, reason, f"died ({reason})")
            elif (slot.ready and slot.inflight
                  and now - slot.last_seen > self.stall_timeout):
                slot.handle.kill()
                self._replace(i, f"no progress for {self.stall_timeout:.0f} s",
                              f"made no progress for {self.stall_timeout:.0f} s")

    def _replace(self, i: int, reason: str, what: str) -> None:
        slot = self.slots[i]
        handle = slot.handle
        self.replaced += 1
        shards = tuple(t.shard.id for t in slot.inflight)
        note = self.queue.give_back(slot.inflight, reason)
        slot.inflight = []
        log.warning("worker %d (pid %s) %s; replaced%s", handle.index, handle.pid or "?", what,
                    f"; {note}" if note else "")
        self.on_event(WorkerReplaced(handle.index, handle.pid, reason, shards))
        handle.close()
        bound = 10 * self.launcher.count + self.max_attempts
        if self.replaced > bound:
            raise JobFailed(f"workers were replaced {self.replaced} times, more than the bound "
                            f"of {bound} (last: worker {handle.index} {what})")
        self.slots[i] = _Slot(self.launcher.start(handle.index))

    def _shutdown(self) -> None:
        try:
            for slot in self.slots:
                slot.handle.stop()
            deadline = time.monotonic() + JOIN_SECONDS
            for slot in self.slots:
                slot.handle.join(max(0.1, deadline - time.monotonic()))
            for slot in self.slots:
                slot.handle.close()
        finally:
            self.slots = []
            self.launcher.close()
