"""The shard queue every engine hands work out from: pending shards, attempts, and failures.

Pure bookkeeping, no processes, so the retry policy is the same on every engine and tested alone.
A failed shard goes back to the front of the queue (it was started first, so it finishes first)
until it has failed ``max_attempts`` times; then it is given up, reported to ``on_event`` and kept
in ``failed`` with its last reason. Every retry is a ``ShardRetried`` event.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..plan import Shard
from .messages import ShardFailed, ShardRetried, ShardTask

log = logging.getLogger(__name__)


class ShardQueue:
    """Shards still to run, in order, with their attempt counts."""

    def __init__(self, shards: Iterable[Shard], max_attempts: int,
                 on_event: Callable[[Any], None]) -> None:
        self.pending = collections.deque(ShardTask(s) for s in shards)
        self.max_attempts = max_attempts
        self.on_event = on_event
        self.attempts: collections.Counter[int] = collections.Counter()
        self.failed: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def pop(self) -> ShardTask:
        return self.pending.popleft()

    def requeue(self, task: ShardTask) -> None:
        """Back to the front, not charged: the shard was only waiting behind another."""
        self.pending.appendleft(task)

    def retry(self, task: ShardTask, reason: str) -> None:
        """Charge an attempt; back to the front, or given up after ``max_attempts``."""
        note = self._charge(task, reason)
        if note:
            log.warning("%s failed (%s); %s", task.shard.name, reason, note)

    def give_back(self, inflight: list[ShardTask], reason: str) -> str:
        """The shards of a lost worker: the one it was computing (the oldest) is charged.

        Returns what became of that one (``shard-000007 re-queued (attempt 2 of 3)``), for the
        caller's one line about the loss; "" when it held none or the shard was given up.
        """
        for task in reversed(inflight[1:]):
            self.requeue(task)
        return self._charge(inflight[0], reason) if inflight else ""

    def _charge(self, task: ShardTask, reason: str) -> str:
        self.attempts[task.shard.id] += 1
        if self.attempts[task.shard.id] >= self.max_attempts:
            self.failed[task.shard.id] = reason
            log.error("%s failed %d times, giving up: %s", task.shard.name,
                      self.attempts[task.shard.id], reason)
            self.on_event(ShardFailed(task.shard.id, reason))
            return ""
        attempt = task.attempt + 1
        self.pending.appendleft(ShardTask(task.shard, attempt))
        self.on_event(ShardRetried(task.shard.id, attempt, self.max_attempts, reason))
        return f"{task.shard.name} re-queued (attempt {attempt} of {self.max_attempts})"
