"""Growing a job's frozen input list: ``--append`` (new inputs) and ``--retry-errors`` (error rows).

The list in ``OUT/inputs.npz`` is append-only. Each growth adds a *segment* at its end, recorded in
``OUT/segments.json`` as ``{"start": index, "kind": "list" | "append" | "retry"}``; the plan cuts
shards segment by segment, so every committed shard keeps its id, its input range and its input
hash, and the new segment's shards take the next ids. ``segments.json`` is written before the list:
a crash between the two leaves a segment starting at the old list's end, which is ignored, and the
next ``--append`` or ``--retry-errors`` does the growth again.

- ``--append``: the sources are listed again; names not yet in the list form the new segment
  (sorted among themselves). Inputs that disappeared keep their rows.
- ``--retry-errors``: the inputs whose error rows still stand (read from the committed markers, in
  shard order) are named again in a ``retry`` segment; a retry shard's results or new error rows
  supersede the earlier error rows (``sinks.base.current_errors``). Inputs already in a later,
  uncommitted retry shard are not added twice, so the command resumes like any run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import ledger
from .errors import SpecError
from .plan import Shard
from .sources import InputList, display_name
from .store import Store

log = logging.getLogger(__name__)

Segment = tuple[int, str]


def load_segments(store: Store) -> list[Segment]:
    try:
        data = json.loads(store.read(ledger.SEGMENTS_FILE))
        return [(int(s["start"]), str(s["kind"])) for s in data]
    except (OSError, ValueError, KeyError, TypeError):
        return [(0, "list")]


def save_segments(store: Store, segments: Sequence[Segment]) -> None:
    data = [{"start": start, "kind": kind} for start, kind in segments]
    store.put_bytes(ledger.SEGMENTS_FILE, json.dumps(data).encode())


def save_inputs(store: Store, inputs: InputList, local_dir: str) -> str:
    """Freeze ``inputs`` in OUT; returns a local path the workers load it from."""
    if not store.remote:
        path = store.path(ledger.INPUTS_FILE)
        inputs.save(path)
        return path
    path = os.path.join(local_dir, ledger.INPUTS_FILE)
    inputs.save(path)
    store.publish(ledger.INPUTS_FILE, lambda tmp: shutil.copyfile(path, tmp))
    return path


def load_inputs(store: Store, local_dir: str) -> tuple[InputList, str]:
    path = store.local_copy(ledger.INPUTS_FILE, local_dir)
    return InputList.load(path), path


def extend(inputs: InputList, source: InputList, indices: Sequence[int]) -> InputList:
    """``inputs`` followed by the items ``indices`` of ``source`` (names and references), in that
    order; existing indices are unchanged."""
    raw_names = [source.raw(i) for i in indices]
    lengths = np.fromiter((len(n) for n in raw_names), dtype=np.int64, count=len(raw_names))
    offsets = np.concatenate([inputs.offsets, inputs.offsets[-1] + np.cumsum(lengths)])
    blob = np.concatenate([inputs.blob, np.frombuffer(b"".join(raw_names), dtype=np.uint8)])
    if inputs.kind is None and source.kind is None:  # loose files: names are the references
        return InputList(root=inputs.root, blob=blob, offsets=offsets.astype(np.int64))
    if inputs.kind is None or source.kind is None:
        raise SpecError("--append: the sources now hold another kind of input than the job's "
                        "(loose files vs tars or tables); give the same sources")
    containers = list(inputs.containers)
    position = {c: i for i, c in enumerate(containers)}
    picked = np.asarray(indices, dtype=np.int64)
    mapped = []
    for c in source.container[picked].tolist():
        if c < 0:
            mapped.append(-1)
            continue
        name = source.containers[c]
        if name not in position:
            position[name] = len(containers)
            containers.append(name)
        mapped.append(position[name])
    return InputList(
        root=inputs.root, blob=blob, offsets=offsets.astype(np.int64),
        kind=np.concatenate([inputs.kind, source.kind[picked]]),
        container=np.concatenate([inputs.container, np.asarray(mapped, dtype=np.int32)]),
        start=np.concatenate([inputs.start, source.start[picked]]),
        size=np.concatenate([inputs.size, source.size[picked]]),
        containers=tuple(containers), options=inputs.options)


def new_inputs(frozen: InputList, listed: InputList) -> list[int]:
    """Indices of the items of ``listed`` that ``frozen`` lacks, in listing order (sorted, for
    loose files; container order for tars and tables); SpecError if the sources moved."""
    if listed.root != frozen.root:
        raise SpecError(f"--append: the sources now list inputs under {os.fsdecode(listed.root)}, "
                        f"the job's under {os.fsdecode(frozen.root)}; give the same sources")
    known = set(frozen.raw_range(0, len(frozen)))
    return [i for i, n in enumerate(listed.raw_range(0, len(listed))) if n not in known]


def errors_to_retry(store: Store, inputs: InputList, shards: Sequence[Shard],
                    done: dict[int, dict[str, Any]]) -> list[int]:
    """Indices of inputs whose error rows still stand, in shard order, not already in a later
    retry shard (each input by its first index: a retried input keeps its first references)."""
    standing: dict[bytes, int] = {}
    for shard in shards:
        if shard.retry:  # committed or not: its inputs are already being retried
            for raw in inputs.raw_range(shard.start, shard.stop):
                standing.pop(raw, None)
        marker = done.get(shard.id)
        if marker is None:
            continue
        for index in _error_indices(store, inputs, shard, marker):
            standing.setdefault(inputs.raw(index), index)
    return list(standing.values())


def _error_indices(store: Store, inputs: InputList, shard: Shard,
                   marker: dict[str, Any]) -> list[int]:
    if "error_rows" in marker:
        return [int(row[0]) for row in marker["error_rows"]]
    if not marker.get("errors"):
        return []
    # a marker written before error rows were recorded in markers: an HDF5 shard file has them
    import h5py

    by_name = {display_name(raw): shard.start + i
               for i, raw in enumerate(inputs.raw_range(shard.start, shard.stop))}
    with h5py.File(store.path(ledger.shard_files(marker, shard.name)[0]), "r") as f:
        names = [row[0].decode() if isinstance(row[0], bytes) else row[0]
                 for row in f["errors"][()]]
    return [by_name[n] for n in names if n in by_name]


def grow(store: Store, inputs: InputList, segments: list[Segment], kind: str,
         source: InputList, indices: Sequence[int],
         local_dir: str) -> tuple[InputList, list[Segment], str]:
    """Add a segment of the items ``indices`` of ``source``: segments first, then the list (see
    the module docstring)."""
    segments = [s for s in segments if s[0] < len(inputs)] + [(len(inputs), kind)]
    save_segments(store, segments)
    grown = extend(inputs, source, indices)
    path = save_inputs(store, grown, local_dir)
    log.info("%s: %d input(s) added as a new segment", kind, len(indices))
    return grown, segments, path
