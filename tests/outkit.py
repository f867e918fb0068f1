"""OUT folders made the way a run makes them, for tests of what reads OUT (status, report, plan,
open): ``job.json`` and the frozen list as ``job.prepare`` writes them, shards committed through
the format's own sink and the ledger's commit path, as a worker commits them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gristmill import ledger, outdir
from gristmill.marker import Marker
from gristmill.outdir import JobState
from gristmill.sources import InputList, display_name
from gristmill.spec import JobSpec


def make_job(out: Path | str, names: Sequence[str], *, shard_size: int, fmt: str = "hdf5",
             outputs: tuple[str, ...] = ("features",)) -> JobState:
    """A job over ``names`` (sorted, as a listing sorts loose files) with nothing committed."""
    spec = JobSpec(sources=("photos",), out=str(out), shard_size=shard_size, outputs=outputs,
                   format=fmt)
    inputs = InputList.from_names(b"/photos", [n.encode() for n in names])
    job = json.dumps({"identity": spec.identity(), "spec": json.loads(spec.to_json())})
    os.makedirs(out, exist_ok=True)
    ledger.init_out(str(out), job, overwrite=False)
    return outdir.save(outdir.build(str(out), spec, inputs, read_markers=False), "", grown=False)


def commit(state: JobState, shard_id: int, errors: dict[str, tuple[str, str]] | None = None, *,
           legacy: bool = False, width: int = 2) -> bool:
    """Commit shard ``shard_id`` of ``state``: every input ok but those in ``errors`` (name ->
    (stage, message)); outputs are rows of the input's index. ``legacy``: a marker without
    error rows, as older versions wrote (HDF5 only: the rows are in the shard file)."""
    errors = errors or {}
    shard = state.shards[shard_id]
    names = [display_name(r) for r in state.inputs.raw_range(shard.start, shard.stop)]
    ok = [n for n in names if n not in errors]
    rows = np.array([[shard.start + names.index(n)] * width for n in ok], dtype="f4").reshape(
        len(ok), width)
    error_rows = tuple((shard.start + names.index(n), n, *errors[n]) for n in names if n in errors)
    files = state.sink.parts(shard.name, ok, {k: rows for k in state.spec.outputs},
                             [r[1:] for r in error_rows], {})
    marker = Marker(shard.id, shard.start, shard.stop, ok=len(ok), errors=len(error_rows),
                    inputs=state.inputs.digest(shard.start, shard.stop),
                    spec=state.spec.identity_hash(), format=state.spec.format,
                    files=tuple(files), error_rows=None if legacy else error_rows,
                    shapes={k: (width,) for k in state.spec.outputs})
    return ledger.commit_parts(state.store, files, marker)
