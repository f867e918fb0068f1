"""The plan: a sorted input list cut into shards with stable ids. Pure functions, no I/O.

A shard is the unit of work, of commit and of resume: shard ``k`` always covers the same inputs of
the job's frozen input list, so its id names the same inputs in every run and on every engine. For
loose files shard ``k`` is ``[k * shard_size, (k + 1) * shard_size)``. When the list has containers
(tars, tables) the plan keeps to their boundaries (``breaks``): a container larger than a shard is
cut into shard-size runs, and whole small containers are packed together up to ``shard_size``, so a
shard reads one tar or a contiguous range of one, or a few whole small ones.
An entry may weigh more than one item (a unit: a whole tar, a table's row group, expanded by its
worker): then the plan packs by weight (``weights``), never cutting an entry, so a tar is one shard
or packed with other small ones, and a large table is cut between row groups.
A list grown by ``--append`` or ``--retry-errors`` is cut segment by segment
(``plan_segments``): the shards of the earlier segments keep their ids and ranges, the new
segment's shards take the next ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shard:
    id: int
    start: int
    stop: int
    retry: bool = False  # its inputs are earlier error rows, named again (--retry-errors)
    weight: int = -1  # the items it holds (an estimate for tars); -1: one per entry

    @property
    def name(self) -> str:
        return f"shard-{self.id:06d}"

    @property
    def items(self) -> int:
        return self.stop - self.start if self.weight < 0 else self.weight

    def __len__(self) -> int:
        return self.items


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


def pack(weights: np.ndarray, shard_size: int, breaks: Sequence[int] = ()) -> list[Shard]:
    """``plan`` by weight: entries are never cut; a container (between ``breaks``) whose weight
    fits a shard is whole, packed with the whole containers before it up to ``shard_size``; a
    heavier one is cut greedily into runs of at most ``shard_size`` (an entry heavier than that
    is a run alone). With every weight 1 this is ``plan``."""
    n = len(weights)
    cumulative = np.concatenate([[0], np.cumsum(weights, dtype=np.int64)]).tolist()
    edges = [0, *breaks, n]
    runs: list[tuple[int, int, bool]] = []
    for lo, hi in itertools.pairwise(edges):
        if cumulative[hi] - cumulative[lo] <= shard_size:
            if runs and runs[-1][2] and cumulative[hi] - cumulative[runs[-1][0]] <= shard_size:
                runs[-1] = (runs[-1][0], hi, True)
            else:
                runs.append((lo, hi, True))
            continue
        start = lo
        while start < hi:
            stop = start + 1
            while stop < hi and cumulative[stop + 1] - cumulative[start] <= shard_size:
                stop += 1
            runs.append((start, stop, False))
            start = stop
    return [Shard(i, a, b, weight=int(cumulative[b] - cumulative[a]))
            for i, (a, b, _) in enumerate(runs)]


def batches(shard: Shard, batch_size: int) -> list[tuple[int, int]]:
    """The shard's batches as absolute [start, stop) input ranges, in order."""
    return [(s, min(s + batch_size, shard.stop))
            for s in range(shard.start, shard.stop, batch_size)]


def plan_segments(segments: list[tuple[int, str]], n_items: int, shard_size: int,
                  breaks: Sequence[int] = (), weights: np.ndarray | None = None) -> list[Shard]:
    """Shards of each segment ``(start, kind)`` of a list of ``n_items`` entries (a segment ends
    where the next starts; segments starting at or past ``n_items`` are ignored), ids running
    on; within a segment, ``plan`` (or ``pack`` by ``weights``) with the container ``breaks``
    that fall inside it."""
    starts = [(s, kind) for s, kind in segments if s < n_items] or [(0, "list")]
    shards: list[Shard] = []
    for (start, kind), (stop, _) in zip(starts, [*starts[1:], (n_items, "")], strict=True):
        inner = [b - start for b in breaks if start < b < stop]
        parts = (plan(stop - start, shard_size, inner) if weights is None
                 else pack(weights[start:stop], shard_size, inner))
        for part in parts:
            shards.append(Shard(len(shards), start + part.start, start + part.stop,
                                kind == "retry", part.weight))
    return shards
