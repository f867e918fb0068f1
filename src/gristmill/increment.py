"""Growing a job's frozen input list: ``--append`` (new inputs) and ``--retry-errors`` (error rows).

The list in ``OUT/inputs.npz`` is append-only. Each growth adds a *segment* at its end, recorded in
``OUT/segments.json`` as ``{"start": index, "kind": "list" | "append" | "retry"}``; the plan cuts
shards segment by segment, so every committed shard keeps its id, its input range and its input
hash, and the new segment's shards take the next ids (``outdir.JobState.grown``; written by
``outdir.save``, segments first).

- ``--append``: the sources are listed again; names not yet in the list form the new segment
  (sorted among themselves). Inputs that disappeared keep their rows.
- ``--retry-errors``: the inputs whose error rows still stand (from the committed markers, in
  shard order) are named again in a ``retry`` segment; a retry shard's results or new error rows
  supersede the earlier error rows (``marker.standing_errors``). Inputs already in a later,
  uncommitted retry shard are not added twice, so the command resumes like any run.

``grow`` applies both to a reopened job without writing anything: ``job.prepare`` then saves the
result, ``gristmill plan`` only shows it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from .errors import SpecError
from .outdir import JobState
from .sources import InputList

log = logging.getLogger(__name__)


def grow(state: JobState, listed: InputList | None) -> tuple[JobState, bool]:
    """``state`` grown by what ``--append`` listed anew (``listed``: the sources listed again)
    and by ``--retry-errors`` as its spec asks; and whether it grew. Writes nothing."""
    grown = False
    if state.spec.append and listed is not None:
        new = new_inputs(state.inputs, listed)
        if new:
            state = state.grown("append", extend(state.inputs, listed, new))
            log.info("append: %d input(s) added as a new segment", len(new))
            grown = True
        else:
            log.info("--append: no input is new")
    if state.spec.retry_errors:
        retry = errors_to_retry(state)
        if retry:
            state = state.grown("retry", extend(state.inputs, state.inputs, retry))
            log.info("retry: %d input(s) added as a new segment", len(retry))
            grown = True
    return state, grown


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


def errors_to_retry(state: JobState) -> list[int]:
    """Indices of inputs whose error rows still stand, in shard order, not already in a later
    retry shard (each input by its first index: a retried input keeps its first references)."""
    inputs = state.inputs
    standing: dict[bytes, int] = {}
    for shard in state.shards:
        if shard.retry:  # committed or not: its inputs are already being retried
            for raw in inputs.raw_range(shard.start, shard.stop):
                standing.pop(raw, None)
        if shard.id not in state.done:
            continue
        for index, *_ in state.shard_errors(shard):
            if index >= 0:
                standing.setdefault(inputs.raw(index), index)
    return list(standing.values())
