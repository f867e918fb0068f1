"""The plan: a sorted input list cut into shards with stable ids. Pure functions, no I/O.

A shard is the unit of work, of commit and of resume: shard ``k`` always covers inputs
``[k * shard_size, (k + 1) * shard_size)`` of the job's frozen input list, so its id names the same
inputs in every run and on every engine. A list grown by ``--append`` or ``--retry-errors`` is cut
segment by segment (``plan_segments``): the shards of the earlier segments keep their ids and
ranges, the new segment's shards take the next ids.
"""

from __future__ import annotations

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


def plan(n_items: int, shard_size: int) -> list[Shard]:
    """Shards of ``shard_size`` items (the last may be shorter) covering ``n_items`` in order."""
    return [Shard(i, start, min(start + shard_size, n_items))
            for i, start in enumerate(range(0, n_items, shard_size))]


def batches(shard: Shard, batch_size: int) -> list[tuple[int, int]]:
    """The shard's batches as absolute [start, stop) input ranges, in order."""
    return [(s, min(s + batch_size, shard.stop))
            for s in range(shard.start, shard.stop, batch_size)]


def plan_segments(segments: list[tuple[int, str]], n_items: int, shard_size: int) -> list[Shard]:
    """Shards of each segment ``(start, kind)`` of a list of ``n_items`` (a segment ends where the
    next starts; segments starting at or past ``n_items`` are ignored), ids running on."""
    starts = [(s, kind) for s, kind in segments if s < n_items] or [(0, "list")]
    shards: list[Shard] = []
    for (start, kind), (stop, _) in zip(starts, [*starts[1:], (n_items, "")], strict=True):
        for at in range(start, stop, shard_size):
            shards.append(Shard(len(shards), at, min(at + shard_size, stop), kind == "retry"))
    return shards
