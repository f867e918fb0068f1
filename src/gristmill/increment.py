"""Growing a job's frozen input list: ``--append`` (new inputs) and ``--retry-errors`` (error rows).

The list in ``OUT/inputs.npz`` is append-only. Each growth adds a *segment* at its end, recorded in
``OUT/segments.json`` as ``{"start": index, "kind": "list" | "append" | "retry"}``; the plan cuts
shards segment by segment, so every committed shard keeps its id, its input range and its input
hash, and the new segment's shards take the next ids (``outdir.JobState.grown``; written by
``outdir.save``, segments first).

- ``--append``: the sources are listed again; names not yet in the list form the new segment
  (sorted among themselves). Inputs that disappeared keep their rows.
- ``--retry-errors``: the inputs whose error rows still stand (from the committed markers, in
  shard order) are named again in a ``retry`` segment (a tar's sample or a table's row by the
  reference its error row carries, so its container is not walked again; a container that could
  not be read at all by its unit); a retry shard's results or new error rows
  supersede the earlier error rows (``marker.standing_errors``). Inputs already in a later,
  uncommitted retry shard are not added twice, so the command resumes like any run.

``grow`` applies both to a reopened job without writing anything: ``job.prepare`` then saves the
result, ``gristmill plan`` only shows it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

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
        if retry is not None:
            state = state.grown("retry", state.inputs.concat(retry))
            log.info("retry: %d input(s) added as a new segment", len(retry))
            grown = True
    return state, grown


def extend(inputs: InputList, source: InputList, indices: Sequence[int]) -> InputList:
    """``inputs`` followed by the entries ``indices`` of ``source`` (names and references), in
    that order; existing indices are unchanged."""
    try:
        return inputs.concat(source.take(indices))
    except ValueError:
        raise SpecError("--append: the sources now hold another kind of input than the job's "
                        "(loose files vs tars or tables); give the same sources") from None


def new_inputs(frozen: InputList, listed: InputList) -> list[int]:
    """Indices of the entries of ``listed`` that ``frozen`` lacks, in listing order (sorted, for
    loose files; container order for tars and tables: new tars, new tables' row groups);
    SpecError if the sources moved."""
    if listed.root != frozen.root:
        raise SpecError(f"--append: the sources now list inputs under {os.fsdecode(listed.root)}, "
                        f"the job's under {os.fsdecode(frozen.root)}; give the same sources")
    known = set(frozen.raw_range(0, len(frozen)))
    listed_names = listed.raw_range(0, len(listed))
    if listed.has_units and frozen.kind is not None and not frozen.has_units:
        # a job frozen before containers were units holds their items: a container it holds
        # already is not new, whatever its unit is named
        held = set(frozen.containers)
        return [i for i, n in enumerate(listed_names) if n not in known
                and listed.containers[int(listed.container[i])] not in held]
    return [i for i, n in enumerate(listed_names) if n not in known]


def errors_to_retry(state: JobState) -> InputList | None:
    """The inputs whose error rows still stand, in shard order, not already in a later retry
    shard, as entries to append: an entry named by its first index (a retried input keeps its
    first references), an item found in a unit by the reference its error row carries (its
    container is not expanded again). None when there is none."""
    inputs = state.inputs
    standing: dict[bytes, tuple[int, tuple[int, int, int, int] | None]] = {}
    for shard in state.shards:
        if shard.retry:  # committed or not: its inputs are already being retried
            for raw in inputs.raw_range(shard.start, shard.stop):
                standing.pop(raw, None)
        if shard.id not in state.done:
            continue
        refs = state.done[shard.id].error_refs or ()
        for k, (index, name, *_) in enumerate(state.shard_errors(shard)):
            ref = refs[k] if k < len(refs) else None
            if index >= 0:
                standing.setdefault(inputs.raw(index), (index, None))
            elif ref is not None:
                standing.setdefault(name.encode("utf-8", "surrogateescape"), (-1, ref))
    if not standing:
        return None
    if all(ref is None for _, ref in standing.values()):
        return inputs.take([index for index, _ in standing.values()])
    entries = []
    for raw, (index, ref) in standing.items():
        if ref is None:
            ref = (int(inputs.kind[index]), int(inputs.container[index]),
                   int(inputs.start[index]), int(inputs.size[index]))
        entries.append((raw, *ref))
    return InputList.from_entries(inputs, entries)
