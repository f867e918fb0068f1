"""The plan: a sorted input list cut into shards with stable ids. Pure functions, no I/O.

A shard is the unit of work, of commit and of resume: shard ``k`` always covers the same inputs of
the job's frozen input list, so its id names the same inputs in every run and on every engine. For
loose files shard ``k`` is ``[k * shard_size, (k + 1) * shard_size)``. When the list has containers
(tars, tables) the plan keeps to their boundaries (``breaks``): a container larger than a shard is
cut into shard-size runs, and whole small containers are packed together up to ``shard_size``, so a
shard reads one tar or a contiguous range of one, or a few whole small ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    id: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.id:06d}"

    def __len__(self) -> int:
        return self.stop - self.start


def plan(n_items: int, shard_size: int, breaks: Sequence[int] = ()) -> list[Shard]:
    """Shards of at most ``shard_size`` items covering ``n_items`` in order (see module doc)."""
    if not breaks:
        return [Shard(i, start, min(start + shard_size, n_items))
                for i, start in enumerate(range(0, n_items, shard_size))]
    edges = [0, *breaks, n_items]
    runs: list[tuple[int, int, bool]] = []
    for lo, hi in itertools.pairwise(edges):
        for start in range(lo, hi, shard_size):
            stop = min(start + shard_size, hi)
            whole = start == lo and stop == hi
            if whole and runs and runs[-1][2] and stop - runs[-1][0] <= shard_size:
                runs[-1] = (runs[-1][0], stop, True)
            else:
                runs.append((start, stop, whole))
    return [Shard(i, start, stop) for i, (start, stop, _) in enumerate(runs)]


def batches(shard: Shard, batch_size: int) -> list[tuple[int, int]]:
    """The shard's batches as absolute [start, stop) input ranges, in order."""
    return [(s, min(s + batch_size, shard.stop))
            for s in range(shard.start, shard.stop, batch_size)]
