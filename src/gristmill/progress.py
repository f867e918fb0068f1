"""Progress while a job runs, and the report at its end.

The driver feeds every engine message to a ``Tracker``: workers push counts (no polling of the
output folder). It draws a progress bar (items/s, ETA) on stderr and adds up where the time went:
``load`` is read + decode + preprocess summed over loader processes, ``model`` and ``write`` are
summed over workers; ``wall`` is the driver's clock.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from .engines.messages import Progress, Receipt, ShardFailed, WorkerReady


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
        for shard, reason in sorted(self.shards_failed.items())[:5]:
            lines.append(f"  FAILED shard-{shard:06d}: {reason}")
        return "\n".join(lines)


class Tracker:
    """Turns engine messages into a progress bar and a ``Report``."""

    def __init__(self, report: Report, total_items: int, show: bool) -> None:
        self.report = report
        self.started = time.monotonic()
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total_items, unit="img", dynamic_ncols=True, smoothing=0.1,
                            desc="gristmill")

    def __call__(self, message: Any) -> None:
        r = self.report
        if isinstance(message, Progress) and self.bar is not None:
            self.bar.update(message.items)
        elif isinstance(message, Receipt):
            r.ok += message.ok
            r.errors += message.errors
            r.shards_committed += int(message.committed)
            for k, v in message.stage_seconds.items():
                r.stage_seconds[k] = r.stage_seconds.get(k, 0.0) + v
        elif isinstance(message, ShardFailed):
            pass  # the engine reports given-up shards in its result
        elif isinstance(message, WorkerReady):
            r.workers.append(dataclasses.asdict(message))

    def close(self) -> None:
        self.report.seconds = time.monotonic() - self.started
        if self.bar is not None:
            self.bar.close()
