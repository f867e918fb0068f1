"""Progress while a job runs, and the report at its end.

The driver feeds every engine message to a ``Tracker``: workers push counts (no polling of the
output folder). It draws a progress bar (items/s, ETA) on stderr and adds up where the time went:
``load`` is read + decode + preprocess summed over loader processes, ``model`` and ``write`` are
summed over workers; ``wall`` is the driver's clock. It also hands every event to the run's event
sinks (``runlog``) and rewrites ``OUT/progress.json`` a few times a minute.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import runlog
from .engines.messages import Progress, Receipt, ShardRetried, WorkerReady, WorkerReplaced
from .runlog import event_of

RATE_SECONDS = 5.0  # a "rate" event this often
PROGRESS_SECONDS = 10.0  # OUT/progress.json rewritten this often
RATE_WINDOW = 30.0  # the current rate is measured over this much recent time


@dataclass
class Report:
    """What a run did. ``ok`` excludes items recorded in ``errors``; shard counts are this run's."""

    out: str
    items: int = 0
    ok: int = 0
    errors: int = 0
    shards: int = 0
    shards_skipped: int = 0
    shards_committed: int = 0
    shards_failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: {
        "load": 0.0, "model": 0.0, "write": 0.0})
    workers: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    workers_replaced: int = 0  # faults survived: worker processes (or actors) lost and replaced
    shards_retried: int = 0  # shard attempts charged and run again
    view: str = "features.h5"  # what users open, relative to ``out`` (it depends on the format)

    @property
    def throughput(self) -> float:
        """Items per second over this run's wall time."""
        return (self.ok + self.errors) / self.seconds if self.seconds else 0.0

    @property
    def complete(self) -> bool:
        return not self.shards_failed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"throughput": self.throughput}

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        lines = [
            f"gristmill: {self.ok} ok, {self.errors} failed items in {self.seconds:.1f}s "
            f"({self.throughput:.1f} items/s)",
            f"  shards: {self.shards_committed} committed, {self.shards_skipped} already done, "
            f"{len(self.shards_failed)} failed, of {self.shards}",
            f"  time per stage (summed over processes): {stages}",
            "  workers: " + ", ".join(
                f"{w['device']} x{w['threads']} threads + {w['loaders']} loaders"
                for w in self.workers),
            f"  output: {self.out}/{self.view}",
        ]
        if self.workers_replaced or self.shards_retried:
            lines.insert(2, f"  faults survived: {_plural(self.workers_replaced, 'process')} "
                            f"replaced, {_plural(self.shards_retried, 'shard')} retried")
        for shard, reason in sorted(self.shards_failed.items())[:5]:
            lines.append(f"  FAILED shard-{shard:06d}: {reason}")
        return "\n".join(lines)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


class Tracker:
    """Turns engine messages into a progress bar, a ``Report``, events and the progress file.

    ``sinks`` take event dicts (``runlog.RunLog``, ``runlog.JsonlStream``); ``status`` (the
    run id, pid, host, job counts) is the fixed part of ``OUT/progress.json``, written when given.
    """

    def __init__(self, report: Report, total_items: int, show: bool, *,
                 sinks: Sequence[Any] = (), status: dict[str, Any] | None = None,
                 shards: dict[int, tuple[int, int]] | None = None) -> None:
        self.report = report
        self.total_items = total_items  # this run's pending items (estimated, for tars)
        # pending shard id -> (items as planned, bytes): a committed shard's real count replaces
        # its estimate, and with bytes known (tars) the ETA is the bytes left at the bytes/s
        self.shards = dict(shards or {})
        self.bytes_total = sum(b for _, b in self.shards.values())
        self.bytes_done = 0
        self.started = time.monotonic()
        self.sinks = list(sinks)
        self.status = status
        self.items = 0  # done by this run, from Progress (or receipts, whichever is ahead)
        self.receipt_items = 0
        self.samples: collections.deque[tuple[float, int]] = collections.deque(
            [(self.started, 0)])
        self.last_rate = self.last_file = self.started
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total_items, unit="img", dynamic_ncols=True, smoothing=0.1,
                            desc="gristmill")

    def begin(self, start: dict[str, Any]) -> None:
        """The run's first event (command, spec, machine...) and the first progress file."""
        self.emit(start)
        self._write_status("running")

    def __call__(self, message: Any) -> None:
        r = self.report
        if isinstance(message, Progress):
            self.items += message.items
            if self.bar is not None:
                self.bar.update(message.items)
        elif isinstance(message, Receipt) and message.committed:
            # (a receipt not committed is a duplicate attempt: its items were counted once)
            r.ok += message.ok
            r.errors += message.errors
            r.shards_committed += 1
            self.receipt_items += message.ok + message.errors
            self.items = max(self.items, self.receipt_items)
            planned, size = self.shards.pop(message.shard, (0, 0))
            if planned:
                self.total_items += message.ok + message.errors - planned
                if self.bar is not None:
                    self.bar.total = self.total_items
                    self.bar.refresh()
            self.bytes_done += size
            for k, v in message.stage_seconds.items():
                r.stage_seconds[k] = r.stage_seconds.get(k, 0.0) + v
        elif isinstance(message, WorkerReady):
            r.workers.append(dataclasses.asdict(message))
        elif isinstance(message, WorkerReplaced):
            r.workers_replaced += 1
        elif isinstance(message, ShardRetried):
            r.shards_retried += 1
        # a ShardFailed given up is in the engine's result; a replaced worker only in the events
        event = event_of(message)
        if event is not None:
            if event["event"] == "shard":
                event["committed_total"] = r.shards_skipped + r.shards_committed
            self.emit(event)
        self._tick(time.monotonic())

    def emit(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(event)

    def rate(self, now: float) -> float:
        """Items/s over the last ``RATE_WINDOW`` seconds (the whole run while shorter)."""
        self.samples.append((now, self.items))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return (self.items - n0) / (now - t0) if now > t0 else 0.0

    def eta(self, rate: float) -> float | None:
        if self.bytes_total and self.bytes_done:  # tars: items are estimates, bytes are known
            spent = time.monotonic() - self.started
            return (self.bytes_total - self.bytes_done) * spent / self.bytes_done
        left = max(0, self.total_items - self.items)
        return left / rate if rate > 0 else (0.0 if not left else None)

    def _tick(self, now: float) -> None:
        if now - self.last_rate >= RATE_SECONDS:
            self.last_rate = now
            rate = self.rate(now)
            self.emit({"event": "rate", "time": time.time(), "items": self.items,
                       "rate": round(rate, 3), "eta": _round(self.eta(rate)),
                       **({"bytes_done": self.bytes_done} if self.bytes_total else {}),
                       "committed_total": self.report.shards_skipped
                       + self.report.shards_committed})
        if now - self.last_file >= PROGRESS_SECONDS:
            self.last_file = now
            self._write_status("running")

    def _write_status(self, state: str) -> None:
        if self.status is None:
            return
        rate = self.rate(time.monotonic()) if state == "running" else self.report.throughput
        r = self.report
        runlog.write_progress(r.out, self.status | {
            "state": state, "updated": time.time(), "items_done": self.items, "ok": r.ok,
            "errors": r.errors, "shards_committed": r.shards_skipped + r.shards_committed,
            "shards_failed": len(r.shards_failed), "rate": round(rate, 3),
            "eta_seconds": _round(self.eta(rate)) if state == "running" else None})

    def close(self, outcome: str = "") -> None:
        """Stop the clock; with ``outcome`` (complete, failed, stopped, error) end the events."""
        r = self.report
        r.seconds = time.monotonic() - self.started
        if self.bar is not None:
            self.bar.close()
        if outcome:
            self.emit({"event": "end", "time": time.time(), "outcome": outcome,
                       "seconds": round(r.seconds, 3), "items": self.items, "ok": r.ok,
                       "errors": r.errors, "shards_committed": r.shards_committed,
                       "committed_total": r.shards_skipped + r.shards_committed,
                       "shards_failed": {str(k): v for k, v in r.shards_failed.items()},
                       "stage_seconds": r.stage_seconds})
            self._write_status(outcome)
        for sink in self.sinks:
            sink.close()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
