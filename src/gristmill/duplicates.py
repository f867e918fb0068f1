"""Keys found more than once: a webdataset key in two tars (or twice in one), a table key in two
rows. Planning reads no tar and no key column, so a repeated key is found after the run, in what
the committed shards hold: every copy keeps its row (nothing is dropped or merged), and the report
and ``gristmill inspect`` name the key, its count and the containers holding it.

Cost: one pass over the committed shards' names (through the job's sink) and a count of them, so
memory grows with the items (about 100 bytes a name): this runs after a run and on demand, never
on the path that hands out shards. Per-shard ``Marker.rows`` (ok rows per unit) map a row back to
its container.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .outdir import JobState

SHOWN = 20  # duplicates kept in full (the count of all of them is kept too)
REPORT_ROWS = 20_000_000  # the report checks jobs up to this many rows (about 2 GB of names)


@dataclass(frozen=True)
class Duplicate:
    key: str
    count: int
    containers: tuple[str, ...]  # where its copies are, in shard order (repeats kept)


@dataclass(frozen=True)
class Duplicates:
    keys: int  # how many keys are repeated
    rows: int  # how many rows they take
    first: tuple[Duplicate, ...]  # the first ``SHOWN`` of them, in output order

    def line(self) -> str:
        d = self.first[0]
        where = " and ".join(dict.fromkeys(d.containers))
        return (f"{self.keys} key(s) occur more than once ({self.rows} rows; first: {d.key!r}, "
                f"{d.count}x, in {where}): every copy is kept")


def checked_by_report(state: JobState) -> bool:
    """Whether the report checks this job (``inspect`` always does): up to ``REPORT_ROWS``."""
    return state.ok <= REPORT_ROWS


def find(state: JobState) -> Duplicates | None:
    """The repeated keys among the committed shards' rows; None when every key is unique."""
    if not state.inputs.has_units or not state.done:
        return None  # loose files are unique by path; item lists were checked when listed
    markers = state.committed
    with state.sink.open(state.store, markers, state.spec.outputs) as result:
        names = list(result.names)
    counts = collections.Counter(names)
    repeated = {k: n for k, n in counts.items() if n > 1}
    if not repeated:
        return None
    where = _containers(state, markers, len(names))
    first: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if name in repeated and (name in first or len(first) < SHOWN):
            first.setdefault(name, []).append(where[i])
    return Duplicates(len(repeated), sum(repeated.values()),
                      tuple(Duplicate(k, repeated[k], tuple(c)) for k, c in first.items()))


def _containers(state: JobState, markers: list, total: int) -> list[str]:
    """The container of each output row, in output order (from each marker's ``rows``)."""
    inputs = state.inputs
    out: list[str] = []
    for m in markers:
        counts = m.rows or (m.ok,)  # a shard without per-entry rows: its first entry's
        for offset, n in enumerate(counts):
            entry = m.start + offset
            c = int(inputs.container[entry]) if inputs.container is not None else -1
            out += [inputs.containers[c] if c >= 0 else ""] * n
    return out + [""] * (total - len(out))
