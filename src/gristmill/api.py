"""The Python API: ``run`` a job, ``open`` its output.

Example::

    import gristmill

    report = gristmill.run(["photos/"], "out/", outputs=["features", "logits"])
    with gristmill.open("out/") as result:
        names, feats = result.names, result["features"][:]
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

from . import ledger
from .engines import forkserver
from .errors import JobFailed
from .job import prepare
from .progress import Report, Tracker
from .sinks.base import Result, committed_markers, get_sink
from .spec import JobSpec, ModelSpec, Preprocess
from .store import Store

log = logging.getLogger(__name__)

VIEWS = {"parquet": "parquet/*.parquet (errors.parquet)",
         "npy": "<output>/*.npy + metadata/*.parquet (errors.parquet)"}


def run(sources: Sequence[str] | str | JobSpec, out: str | None = None, *,
        model: str | ModelSpec = "efficientnet-lite0", outputs: Sequence[str] = (),
        preprocess: Preprocess | None = None, **options: Any) -> Report:
    """Run a model over every input of ``sources`` into ``out``; returns the run's ``Report``.

    ``sources`` may also be a ready ``JobSpec`` (then ``out`` and the rest are ignored). Options are
    the ``JobSpec`` fields (``batch_size``, ``shard_size``, ``workers``, ``device``, ``overwrite``,
    ...). Rerunning the same call resumes. Raises ``SpecError`` for a bad job (nothing started) and
    ``JobFailed`` when shards failed every attempt (committed shards are kept).
    """
    if isinstance(sources, JobSpec):
        spec = sources
    else:
        if out is None:
            raise TypeError("run() needs an output folder")
        spec = JobSpec(
            sources=(sources,) if isinstance(sources, str) else tuple(sources), out=out,
            model=model if isinstance(model, ModelSpec) else ModelSpec(ref=model),
            outputs=tuple(outputs), preprocess=preprocess or Preprocess(), **options)
    return execute(spec)


def execute(spec: JobSpec) -> Report:
    """Prepare, run the pending shards on the spec's engine, and refresh ``features.h5``."""
    spec.check()  # before starting anything for it
    # the engine's worker processes start now, their imports overlapping the preparation
    if spec.engine == "ray":
        from .engines.ray import prestart

        actors = prestart(spec)
        try:
            return _execute(spec, None, actors)
        finally:
            actors.close()  # the actors the engine did not take (a job that failed early)
    return _execute(spec, forkserver.warm(), None)


def _execute(spec: JobSpec, warmup: forkserver.Warmup | None, actors: Any) -> Report:
    job = prepare(spec, settle=warmup.settle if warmup else None)
    spec = job.spec
    report = Report(out=spec.out, items=len(job.inputs), shards=len(job.shards),
                    shards_skipped=len(job.done), resumed=job.resumed,
                    view=VIEWS.get(spec.format, ledger.VIEW_FILE))
    tracker = Tracker(report, sum(len(s) for s in job.pending), spec.progress)
    from .engines.local import raise_on_sigterm

    restore = raise_on_sigterm()
    try:
        engine = _engine(spec, job, tracker, actors)
        report.shards_failed = engine.run(job.pending)
    except JobFailed:
        with contextlib.suppress(OSError):  # what was committed stays readable
            refresh_view(spec, job.shards)
        raise
    finally:
        restore()
        tracker.close()
        # every worker is stopped now: a temp file left is from one killed mid-write (its shard
        # was committed by a retry, or will be by the next run), never part of the output
        with contextlib.suppress(OSError):
            ledger.remove_stale_temps(spec.out, get_sink(spec.format).folders(spec.outputs))
        if Store(spec.out).remote:  # the local copies the workers read
            shutil.rmtree(job.cache_dir, ignore_errors=True)
    try:
        refresh_view(spec, job.shards)
    except OSError as exc:  # a full or read-only disk: committed shards stay, a rerun rebuilds it
        view = ledger.VIEW_FILE if spec.format == "hdf5" else "errors.parquet"
        raise JobFailed(f"cannot write {Store(spec.out).path(view)}: "
                        f"{exc.strerror or exc}; committed shards are kept, rerun to resume",
                        report) from None
    if report.shards_failed:
        raise JobFailed(f"{len(report.shards_failed)} shard(s) failed; rerun the same command to "
                        f"retry them (first: {next(iter(report.shards_failed.values()))})", report)
    return report


def _engine(spec: JobSpec, job: Any, on_event: Any, actors: Any) -> Any:
    inputs_path = job.inputs_path or os.path.join(spec.out, ledger.INPUTS_FILE)
    if spec.engine == "ray":
        from .engines.ray import RayEngine

        return RayEngine(spec, inputs_path, job.workers, on_event, actors)
    from .engines.local import LocalEngine

    return LocalEngine(spec, inputs_path, job.workers, on_event)


def refresh_view(spec: JobSpec, shards: Sequence[Any]) -> str:
    """Rebuild the format's view (``features.h5`` or ``errors.parquet``) over every committed
    shard of the plan, in id order."""
    store = Store(spec.out)
    planned = {s.name for s in shards}
    found = [(name, marker) for name, marker in committed_markers(store) if name in planned]
    if not store.remote:  # as the resume: a marker whose files are gone is no shard
        found = [(n, m) for n, m in found
                 if all(os.path.exists(store.path(f)) for f in ledger.shard_files(m, n))]
    attrs = {"complete": len(found) == len(shards), "shards": len(shards),
             "committed_shards": len(found), "model": spec.model.ref}
    return get_sink(spec.format).refresh_view(store, found, spec.outputs, attrs)


def open(out: str) -> Result:
    """Open a job's output in any format: ``.names``, ``["output"]``, ``.errors``, ``.columns``.

    HDF5 outputs are read lazily from ``features.h5`` (h5py datasets; close the result);
    Parquet and npy outputs are read from their committed shards into numpy arrays.
    """
    from .errors import SpecError

    if out.endswith(".h5"):
        return get_sink("hdf5").open(out)
    job = ledger.read_job(out)
    if job is None and not Store(out).exists(ledger.VIEW_FILE):
        raise SpecError(f"{out} holds no gristmill output (no {ledger.JOB_FILE})")
    fmt = ((job or {}).get("spec") or {}).get("format", "hdf5")
    return get_sink(fmt).open(out)
