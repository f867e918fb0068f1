"""The job an OUT holds, as it stands: one typed reading that every command shares.

``reopen(out)`` reads ``job.json`` (the spec), the frozen input list ``inputs.npz`` and its
``segments.json``, plans the shards segment by segment and reads the markers of the committed ones:
a ``JobState``. ``job.prepare`` (a resume), ``gristmill plan``, ``gristmill status``, the report,
``--append`` / ``--retry-errors`` (``JobState.grown``) and ``gristmill.open`` all start from it, so
they cannot disagree about which shards exist or which are done. Nothing else plans shards or reads
markers (``marker.py`` is the marker's one reader and writer).

A committed shard is one whose marker is present, readable, and agrees with the plan: the digest of
the names of its inputs and the job's identity hash match (a marker that disagrees belongs to
another job that the identity check did not catch, and is recomputed), and on a folder every file
it lists exists (a marker whose files were removed by hand is no shard). An object store is trusted:
its marker was put after its files, and checking would cost a request per file.

Cost: one listing of ``shards/`` and one read per marker present (concurrent on object storage),
plus the input list, which grows with the containers for tars and tables (their units) and with
the items for loose files (compact: one byte buffer and a few numpy columns).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from . import marker as markers
from . import sinks
from .errors import SpecError
from .ledger import INPUTS_FILE, SEGMENTS_FILE, read_job
from .marker import IndexedError, Marker
from .plan import Shard, plan_segments
from .sinks.base import Result, Sink
from .sources import InputList
from .spec import JobSpec
from .store import Store

log = logging.getLogger(__name__)

Segment = tuple[int, str]  # (first index, "list" | "append" | "retry")


@dataclass(frozen=True)
class Containers:
    """How far a job of containers is: containers (tars, tables) done and in all, and bytes
    (tars: what the ETA counts, since their items are known only once read)."""

    total: int
    done: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class JobState:
    """A job's spec, frozen inputs, segments, shards and committed shards (see module doc)."""

    out: str
    spec: JobSpec
    inputs: InputList
    segments: tuple[Segment, ...]
    shards: tuple[Shard, ...]
    done: dict[int, Marker] = field(default_factory=dict)
    inputs_path: str = ""  # a local copy of inputs.npz (workers load it), where one was kept

    @property
    def store(self) -> Store:
        return Store(self.out)

    @cached_property
    def sink(self) -> Sink:
        return sinks.get(self.spec.format)

    @property
    def pending(self) -> list[Shard]:
        return [s for s in self.shards if s.id not in self.done]

    @property
    def committed(self) -> list[Marker]:
        """The committed shards' markers, in id order."""
        return markers.in_order(self.done.values())

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.shards)

    @property
    def ok(self) -> int:
        return sum(m.ok for m in self.done.values())

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.done.values())

    @property
    def items(self) -> int:
        """The items of the job: those of committed shards as counted, the pending shards'
        as planned (estimated where ``estimated``)."""
        return sum(self.done[s.id].items if s.id in self.done else s.items for s in self.shards)

    @property
    def items_pending(self) -> int:
        return sum(len(s) for s in self.pending)

    @property
    def estimated(self) -> bool:
        """Whether ``items`` is partly an estimate: pending shards of tars (whose items are
        estimated from their sizes until a worker reads them)."""
        sizes = self.inputs.unit_bytes()
        return any(sizes[s.start:s.stop].any() for s in self.pending)

    def containers(self) -> Containers | None:
        """Containers and bytes, done and in all, of a list of units (None: items only)."""
        inputs = self.inputs
        mask = inputs.unit_mask()
        if not mask.any():
            return None
        done = np.zeros(len(inputs), dtype=bool)
        for shard in self.shards:
            if shard.id in self.done:
                done[shard.start:shard.stop] = True
        container = inputs.container[mask]
        total = np.unique(container)
        pending = np.unique(container[~done[mask]])
        sizes = inputs.unit_bytes()
        return Containers(len(total), len(total) - len(pending), int(sizes[done].sum()),
                          int(sizes.sum()))

    def error_rows(self) -> list[IndexedError]:
        """The error rows still standing after every committed shard (a retry shard's rows
        replace the earlier rows of the inputs it named again), in shard order."""
        return markers.standing_errors(
            [(m.retried, self.sink.error_rows(self.store, m)) for m in self.committed])

    def shard_errors(self, shard: Shard) -> list[IndexedError]:
        """The error rows of one committed shard, each with its input's index."""
        marker = self.done[shard.id]
        rows = self.sink.error_rows(self.store, marker)
        if marker.error_refs is not None or all(index >= 0 for index, *_ in rows):
            return rows  # (-1 with a reference: a sample of a unit, reopened by that)
        # rows an old shard file gave without indices: found again by name within the shard
        from .sources import display_name

        at = {display_name(raw): shard.start + i
              for i, raw in enumerate(self.inputs.raw_range(shard.start, shard.stop))}
        return [(at.get(row[1], -1) if row[0] < 0 else row[0], *row[1:]) for row in rows]

    def refreshed(self) -> JobState:
        """The same job with its committed shards read again (after a run)."""
        return replace(self, done=committed(self.store, self.shards, self.inputs,
                                            self.spec.identity_hash()))

    def grown(self, kind: str, inputs: InputList) -> JobState:
        """The job with ``inputs`` (the old list plus new items at its end) as a new segment of
        ``kind``; shards of earlier segments keep their ids. Nothing is written (``save``)."""
        segments = (*(s for s in self.segments if s[0] < len(self.inputs)),
                    (len(self.inputs), kind))
        shards = tuple(plan_segments(list(segments), len(inputs), self.spec.shard_size,
                                     inputs.breaks(), inputs.weight))
        done = {i: m for i, m in self.done.items() if i < len(self.shards)}
        return replace(self, inputs=inputs, segments=segments, shards=shards, done=done,
                       inputs_path="")


def build(out: str, spec: JobSpec, inputs: InputList, segments: Sequence[Segment] = ((0, "list"),),
          *, inputs_path: str = "", read_markers: bool = True) -> JobState:
    """The state of ``spec``'s job over ``inputs``: shards planned, committed ones read."""
    segments = tuple(s for s in segments if s[0] < len(inputs)) or ((0, "list"),)
    shards = tuple(plan_segments(list(segments), len(inputs), spec.shard_size, inputs.breaks(),
                                 inputs.weight))
    done = (committed(Store(out), shards, inputs, spec.identity_hash()) if read_markers else {})
    return JobState(out, spec, inputs, segments, shards, done, inputs_path)


def reopen(out: str, spec: JobSpec | None = None, *, local_dir: str | None = None) -> JobState:
    """The job OUT holds; ``spec`` replaces the saved one (a run's resolved spec, whose identity
    the caller checked). ``local_dir`` keeps a local copy of the input list (object storage).

    ``SpecError`` when OUT holds no job or its input list cannot be read.
    """
    store = Store(out)
    job = read_job(out)
    if job is None or not isinstance(job.get("spec"), dict):
        raise SpecError(f"{out} holds no gristmill job (no readable {store.path('job.json')})")
    if spec is None:
        try:
            spec = JobSpec.from_dict(job["spec"])
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{store.path('job.json')} cannot be read: {exc}") from None
    try:
        inputs, path = load_inputs(store, local_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError(f"{out} holds no frozen input list ({store.path(INPUTS_FILE)}: "
                        f"{getattr(exc, 'strerror', None) or exc})") from None
    return build(out, spec, inputs, load_segments(store), inputs_path=path)


def committed(store: Store, shards: Sequence[Shard], inputs: InputList,
              spec_hash: str) -> dict[int, Marker]:
    """Markers of the planned shards already committed for this job, by shard id."""
    by_id = {s.id: s for s in shards}
    found = {}
    for m in markers.read_all(store, by_id):
        shard = by_id[m.shard]  # read_all gave only wanted ids
        if not store.remote and not all(os.path.exists(store.path(f)) for f in m.files):
            continue
        if m.inputs != inputs.digest(shard.start, shard.stop) or m.spec != spec_hash:
            log.warning("%s: marker does not match this job; recomputing it", shard.name)
            continue
        found[shard.id] = m
    return found


def open_result(out: str) -> Result:
    """``gristmill.open``: the committed shards of the job OUT holds, through its sink (a
    folder with a view file but no job, such as a copied ``features.h5``: that view)."""
    store = Store(out)
    if read_job(out) is None:
        for sink in sinks.every():
            for rel in sink.view_files:
                if not store.remote and os.path.isfile(store.path(rel)):
                    result = sink.open_file(store.path(rel))
                    if result is not None:
                        return result
        raise SpecError(f"{out} holds no gristmill output (no job.json)")
    state = reopen(out)
    return state.sink.open(state.store, state.committed, state.spec.outputs)


# -- the frozen list and its segments on disk ----------------------------------------------------
def load_segments(store: Store) -> list[Segment]:
    try:
        data = json.loads(store.read(SEGMENTS_FILE))
        return [(int(s["start"]), str(s["kind"])) for s in data]
    except (OSError, ValueError, KeyError, TypeError):
        return [(0, "list")]


def load_inputs(store: Store, local_dir: str | None) -> tuple[InputList, str]:
    """The frozen list, and a local path to it ("" when only a temporary copy was read)."""
    if not store.remote:
        path = store.path(INPUTS_FILE)
        return InputList.load(path), path
    if local_dir is not None:
        path = store.local_copy(INPUTS_FILE, local_dir)
        return InputList.load(path), path
    with tempfile.TemporaryDirectory(prefix="gristmill-inputs-") as tmp:
        return InputList.load(store.local_copy(INPUTS_FILE, tmp)), ""


def save(state: JobState, local_dir: str, *, grown: bool) -> JobState:
    """Freeze the state's input list in OUT. A grown list writes ``segments.json`` first: a
    crash between the two leaves a segment starting at the old list's end, which ``build``
    ignores, and the next ``--append`` or ``--retry-errors`` grows the list again. A new
    job's list has one segment (an old job's segments file would misplace it)."""
    store = state.store
    if grown:
        data = [{"start": start, "kind": kind} for start, kind in state.segments]
        store.put_bytes(SEGMENTS_FILE, json.dumps(data).encode())
    else:
        store.remove(SEGMENTS_FILE)
    if not store.remote:
        path = store.path(INPUTS_FILE)
        state.inputs.save(path)
    else:
        path = os.path.join(local_dir, INPUTS_FILE)
        state.inputs.save(path)
        store.publish(INPUTS_FILE, lambda tmp: shutil.copyfile(path, tmp))
    return replace(state, inputs_path=path)
