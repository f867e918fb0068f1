"""The engine seam's contract: ``Supervisor`` over fake worker handles, in this process.

Every engine (local processes, Ray actors) is a ``Launcher`` of ``WorkerHandle``s driven by the
one ``Supervisor``; these fakes play the handles' part with no process at all, so the scheduling
and fault policy are checked in milliseconds: shards handed out as workers free up (never more than
``PREFETCH`` in flight, never before ``WorkerReady``), a worker that dies mid-shard replaced under
its index with its shards re-queued and only the one it was computing charged
(``ShardQueue.give_back``), a stalled worker killed and replaced, a shard that keeps failing given
up and reported while the rest completes, and the shutdown order.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gristmill.engines import supervisor as sup
from gristmill.engines.messages import (
    Receipt,
    ShardFailed,
    ShardRetried,
    ShardTask,
    WorkerCrashed,
    WorkerReady,
    WorkerReplaced,
)
from gristmill.errors import JobFailed, SourceChanged
from gristmill.plan import plan


@dataclass
class Fate:
    """How one incarnation of a worker behaves.

    ``pace``: it commits its oldest shard every ``pace``-th poll. ``die_on``: it dies (as if
    SIGKILLed) when its oldest shard is one of these. ``fail_on``: it reports ``ShardFailed`` for
    these (a model error) instead of committing them. ``stall``: after ``WorkerReady`` it takes
    shards and never sends anything again. ``setup_error``: it fails in setup. ``dead``: it never
    started at all (a failed start).
    """

    pace: int = 1
    die_on: frozenset[int] = frozenset()
    fail_on: frozenset[int] = frozenset()
    stall: bool = False
    setup_error: str = ""
    dead: str = ""
    fatal_on: frozenset[int] = frozenset()  # ShardFailed(fatal=True): a container changed


@dataclass
class FakeWorker:
    """A ``WorkerHandle`` whose worker lives inside the handle (see ``Fate``)."""

    index: int
    pid: int
    fate: Fate
    log: list[tuple[str, int, int, Any]]
    inflight: list[ShardTask] = field(default_factory=list)
    greeted: bool = False
    polls: int = 0
    gone: str | None = None
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fate.dead:
            self.gone = self.fate.dead

    def send(self, task: ShardTask) -> None:
        # the protocol: shards only to a ready worker, at most PREFETCH of them at once
        assert self.greeted and self.gone is None
        assert len(self.inflight) < sup.PREFETCH, "more than PREFETCH shards in flight"
        self.inflight.append(task)
        self.log.append(("sent", self.index, self.pid, task))

    def receive(self) -> list[Any]:
        if self.gone is not None:
            return []
        if not self.greeted:
            self.greeted = True
            if self.fate.setup_error:
                return [WorkerCrashed(self.index, "setup", self.fate.setup_error)]
            return [WorkerReady(self.index, self.pid, "cpu", 1, 1, 0.0)]
        if self.fate.stall or not self.inflight:
            return []
        self.polls += 1
        if self.polls % self.fate.pace:
            return []
        task = self.inflight[0]
        if task.shard.id in self.fate.die_on:
            self.gone = "killed by SIGKILL"
            return []
        self.inflight.pop(0)
        if task.shard.id in self.fate.fail_on:
            return [ShardFailed(task.shard.id, "model: RuntimeError: boom")]
        if task.shard.id in self.fate.fatal_on:
            self.log.append(("fatal", self.index, self.pid, task))
            return [ShardFailed(task.shard.id, "tar x.tar changed", fatal=True)]
        self.log.append(("committed", self.index, self.pid, task))
        return [Receipt(task.shard.id, len(task.shard), 0, True, worker=self.index)]

    def exit_reason(self) -> str | None:
        return self.gone

    def kill(self) -> None:
        self.calls.append("kill")
        self.gone = "killed by SIGKILL"

    def stop(self) -> None:
        self.calls.append("stop")

    def join(self, timeout: float) -> bool:
        self.calls.append("join")
        return True

    def close(self) -> None:
        self.calls.append("close")


class FakeLauncher:
    """A ``Launcher`` of ``FakeWorker``s; ``fate(index, incarnation)`` says how each behaves."""

    setup_timeout = None

    def __init__(self, count: int, fate: Callable[[int, int], Fate] = lambda i, n: Fate()):
        self.count, self.fate = count, fate
        self.pids = itertools.count(1000)
        self.incarnations: collections.Counter[int] = collections.Counter()
        self.handles: list[FakeWorker] = []
        self.log: list[tuple[str, int, int, Any]] = []
        self.closed = 0

    def start(self, index: int) -> FakeWorker:
        fate = self.fate(index, self.incarnations[index])
        self.incarnations[index] += 1
        handle = FakeWorker(index, next(self.pids), fate, self.log)
        self.handles.append(handle)
        return handle

    def wait(self, handles: Sequence[FakeWorker], timeout: float) -> list[FakeWorker]:
        time.sleep(0.0005)  # a worker "computes"; a stall is measured in real seconds
        return list(handles)

    def tend(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1

    def committed(self) -> collections.Counter[int]:
        return collections.Counter(t.shard.id for what, _, _, t in self.log
                                   if what == "committed")


def run(launcher: FakeLauncher, n_shards: int, *, max_attempts: int = 3,
        stall_timeout: float = 60.0) -> tuple[dict[int, str], list[Any]]:
    events: list[Any] = []
    supervisor = sup.Supervisor(launcher, max_attempts=max_attempts, stall_timeout=stall_timeout,
                                on_event=events.append)
    return supervisor.run(plan(n_shards * 4, 4)), events


def test_shards_go_to_whichever_worker_is_free_and_all_are_shut_down_in_order():
    # worker 0 commits a shard every poll, worker 1 every fifth: work follows speed
    launcher = FakeLauncher(2, lambda i, n: Fate(pace=1 if i == 0 else 5))
    failed, events = run(launcher, 24)
    assert failed == {}
    assert launcher.committed() == {k: 1 for k in range(24)}  # every shard once
    per_worker = collections.Counter(i for what, i, _, _ in launcher.log if what == "committed")
    assert per_worker[0] > 2 * per_worker[1] > 0
    sent = [t.shard.id for what, _, _, t in launcher.log if what == "sent"]
    assert sent == list(range(24))  # handed out in order, each once
    assert sum(isinstance(e, WorkerReady) for e in events) == 2
    assert sum(isinstance(e, Receipt) for e in events) == 24
    for handle in launcher.handles:  # ask all, wait for all, then close all; once each
        assert handle.calls == ["stop", "join", "close"]
    assert launcher.closed == 1


def test_a_worker_that_dies_mid_shard_is_replaced_and_only_that_shard_is_charged():
    # the first worker 1 dies while computing shard 3 (it also holds the shard after it)
    launcher = FakeLauncher(2, lambda i, n: Fate(die_on=frozenset({3}) if (i, n) == (1, 0)
                                                 else frozenset()))
    failed, events = run(launcher, 12)
    assert failed == {}
    assert launcher.committed() == {k: 1 for k in range(12)}
    assert launcher.incarnations == {0: 1, 1: 2}  # replaced under the same index
    (replaced,) = [e for e in events if isinstance(e, WorkerReplaced)]
    dead = launcher.handles[1]
    assert replaced.worker == 1 and replaced.pid == dead.pid
    assert replaced.reason == "killed by SIGKILL" and replaced.shards[0] == 3
    assert len(replaced.shards) == 2  # it held PREFETCH shards; both went back to the queue
    assert [e for e in events if isinstance(e, ShardRetried)] == [
        ShardRetried(3, 2, 3, "killed by SIGKILL")]  # the other one was not charged
    resent = {t.shard.id: t.attempt for what, _, pid, t in launcher.log
              if what == "sent" and pid != dead.pid and t.shard.id in replaced.shards}
    assert resent == {3: 2, replaced.shards[1]: 1}
    assert dead.calls[-1] == "close"  # its leftovers freed when it was replaced


def test_a_stalled_worker_is_killed_and_its_shards_run_elsewhere():
    launcher = FakeLauncher(2, lambda i, n: Fate(stall=(i, n) == (0, 0), pace=2))
    started = time.monotonic()
    failed, events = run(launcher, 10, stall_timeout=0.3)
    assert time.monotonic() - started >= 0.3  # not before its stall timeout
    assert failed == {}
    assert launcher.committed() == {k: 1 for k in range(10)}
    stalled = launcher.handles[0]
    assert stalled.fate.stall and stalled.calls[0] == "kill"
    (replaced,) = [e for e in events if isinstance(e, WorkerReplaced)]
    assert replaced.worker == 0 and replaced.reason.startswith("no progress for")
    assert set(replaced.shards) == {0, 1}  # the first two shards it took, committed by others
    assert not any(pid == stalled.pid for what, _, pid, _ in launcher.log if what == "committed")


def test_a_shard_that_keeps_killing_its_worker_is_given_up_and_the_rest_completes():
    launcher = FakeLauncher(2, lambda i, n: Fate(die_on=frozenset({5})))
    failed, events = run(launcher, 10, max_attempts=3)
    assert failed == {5: "killed by SIGKILL"}
    assert launcher.committed() == {k: 1 for k in range(10) if k != 5}
    assert [e.attempt for e in events if isinstance(e, ShardRetried)] == [2, 3]
    assert [e for e in events if isinstance(e, ShardFailed)] == [
        ShardFailed(5, "killed by SIGKILL")]
    assert sum(isinstance(e, WorkerReplaced) for e in events) == 3


def test_a_shard_the_model_fails_is_retried_then_given_up_without_a_replacement():
    launcher = FakeLauncher(1, lambda i, n: Fate(fail_on=frozenset({2})))  # every attempt
    failed, events = run(launcher, 4, max_attempts=2)
    assert failed == {2: "model: RuntimeError: boom"}
    assert launcher.committed() == {0: 1, 1: 1, 3: 1}
    assert launcher.incarnations == {0: 1}  # a failed shard costs no worker
    assert [e for e in events if isinstance(e, ShardRetried)] == [
        ShardRetried(2, 2, 2, "model: RuntimeError: boom")]


def test_a_worker_whose_setup_fails_fails_the_job_and_everything_is_closed():
    launcher = FakeLauncher(2, lambda i, n: Fate(setup_error="ImportError: no module x"
                                                 if i == 1 else ""))
    with pytest.raises(JobFailed, match="worker 1 could not start: ImportError: no module x"):
        run(launcher, 4)
    assert all(h.calls[-1] == "close" for h in launcher.handles) and launcher.closed == 1


def test_workers_that_keep_dying_fail_the_job_at_the_death_bound():
    launcher = FakeLauncher(2, lambda i, n: Fate(dead="exit code 1") if i == 0 else Fate(pace=50))
    with pytest.raises(JobFailed, match=r"replaced 24 times, more than the bound of 23"):
        run(launcher, 40)
    assert launcher.incarnations[0] == 24  # 10 per worker + max_attempts, then one more
    assert launcher.closed == 1


def test_a_fatal_failure_lets_the_shards_in_flight_commit_then_stops_the_job():
    launcher = FakeLauncher(2, lambda i, n: Fate(pace=1 if i == 0 else 3,
                                                 fatal_on=frozenset({5})))
    with pytest.raises(SourceChanged, match=r"tar x\.tar changed"):
        run(launcher, 24)
    fatal_at = next(k for k, (what, *_) in enumerate(launcher.log) if what == "fatal")
    assert not [e for e in launcher.log[fatal_at:] if e[0] == "sent"]  # nothing more handed out
    sent = {t.shard.id for what, _, _, t in launcher.log if what == "sent"}
    assert set(launcher.committed()) == sent - {5}  # every shard in flight committed
    assert all(n == 1 for n in launcher.committed().values())
    for handle in launcher.handles:
        assert handle.calls == ["stop", "join", "close"]
