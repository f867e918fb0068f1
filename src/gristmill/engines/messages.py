"""Messages between an engine's driver and its workers. Small values only: never features, never
pixels. A worker reports a shard it committed with a ``Receipt`` and one it could not with
``ShardFailed``; ``Progress`` carries item counts for the progress bar and proves liveness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # plan imports numpy, which the command line must not wait for (see api.execute)
    from ..plan import Shard


@dataclass(frozen=True)
class ShardTask:
    shard: Shard
    attempt: int = 1


@dataclass(frozen=True)
class Receipt:
    shard: int
    ok: int
    errors: int
    committed: bool  # False: another attempt had already committed it
    stage_seconds: dict[str, float] = field(default_factory=dict)
    worker: int = -1  # the worker index that computed it
    started: float = 0.0  # wall clock (time.time()) when its first batch was issued
    finished: float = 0.0  # wall clock when its marker was written


@dataclass(frozen=True)
class ShardFailed:
    shard: int
    reason: str
    fatal: bool = False  # no attempt can succeed (a container changed): the job stops


@dataclass(frozen=True)
class Progress:
    items: int


@dataclass(frozen=True)
class WorkerReady:
    worker: int
    pid: int
    device: str
    threads: int
    loaders: int
    setup_seconds: float


@dataclass(frozen=True)
class WorkerCrashed:
    """The worker's own code raised outside any shard (setup failed, for one)."""

    worker: int
    where: str
    error: str


@dataclass(frozen=True)
class WorkerReplaced:
    """The supervisor replaced a worker (local process or Ray actor) that died or stalled.

    ``reason`` is short and human: ``killed by SIGKILL``, ``exit code 1``, ``no progress for 60 s``,
    ``node lost``; ``shards`` are the shard ids it held, now back in the queue.
    """

    worker: int
    pid: int
    reason: str
    shards: tuple[int, ...] = ()


@dataclass(frozen=True)
class ShardRetried:
    """A shard goes back to the queue for another attempt (``attempt`` of ``max_attempts``)."""

    shard: int
    attempt: int
    max_attempts: int
    reason: str


@dataclass(frozen=True)
class Stop:
    """Finish: stop the loaders, free the ring, exit."""
