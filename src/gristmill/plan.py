"""The plan: a sorted input list cut into shards with stable ids. Pure functions, no I/O.

A shard is the unit of work, of commit and of resume: shard ``k`` always covers the same inputs of
the job's frozen input list, so its id names the same inputs in every run and on every engine. For
loose files shard ``k`` is ``[k * shard_size, (k + 1) * shard_size)``. When the list has containers
(tars, tables) the plan keeps to their boundaries (``breaks``): a container larger than a shard is
cut into shard-size runs, and whole small containers are packed together up to ``shard_size``, so a
shard reads one tar or a contiguous range of one, or a few whole small ones.
A list grown by ``--append`` or ``--retry-errors`` is cut segment by segment
(``plan_segments``): the shards of the earlier segments keep their ids and ranges, the new
segment's shards take the next ids.
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
    retry: bool = False  # its inputs are earlier error rows, named again (--retry-errors)

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


def plan_segments(segments: list[tuple[int, str]], n_items: int, shard_size: int,
                  breaks: Sequence[int] = ()) -> list[Shard]:
    """Shards of each segment ``(start, kind)`` of a list of ``n_items`` (a segment ends where the
    next starts; segments starting at or past ``n_items`` are ignored), ids running on; within a
    segment, ``plan`` with the container ``breaks`` that fall inside it."""
    starts = [(s, kind) for s, kind in segments if s < n_items] or [(0, "list")]
    shards: list[Shard] = []
    for (start, kind), (stop, _) in zip(starts, [*starts[1:], (n_items, "")], strict=True):
        inner = [b - start for b in breaks if start < b < stop]
        for part in plan(stop - start, shard_size, inner):
            shards.append(Shard(len(shards), start + part.start, start + part.stop,
                                kind == "retry"))
    return shards
