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
from collections.abc import Sequence
from typing import Any

from . import ledger
from .engines import forkserver
from .errors import JobFailed
from .job import prepare
from .progress import Report, Tracker
from .sinks.hdf5 import Result, build_view, open_view
from .spec import JobSpec, ModelSpec, Preprocess

log = logging.getLogger(__name__)


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
                    shards_skipped=len(job.done), resumed=job.resumed)
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
            ledger.remove_stale_temps(spec.out)
    try:
        refresh_view(spec, job.shards)
    except OSError as exc:  # a full or read-only disk: committed shards stay, a rerun rebuilds it
        raise JobFailed(f"cannot write {os.path.join(spec.out, ledger.VIEW_FILE)}: "
                        f"{exc.strerror or exc}; committed shards are kept, rerun to resume",
                        report) from None
    if report.shards_failed:
        raise JobFailed(f"{len(report.shards_failed)} shard(s) failed; rerun the same command to "
                        f"retry them (first: {next(iter(report.shards_failed.values()))})", report)
    return report


def _engine(spec: JobSpec, job: Any, on_event: Any, actors: Any) -> Any:
    inputs_path = os.path.join(spec.out, ledger.INPUTS_FILE)
    if spec.engine == "ray":
        from .engines.ray import RayEngine

        return RayEngine(spec, inputs_path, job.workers, on_event, actors)
    from .engines.local import LocalEngine

    return LocalEngine(spec, inputs_path, job.workers, on_event)


def refresh_view(spec: JobSpec, shards: Sequence[Any]) -> str:
    """Rebuild ``features.h5`` over every committed shard, in input order."""
    files = [ledger.shard_path(spec.out, s) for s in shards
             if os.path.exists(ledger.marker_path(spec.out, s))]
    return build_view(spec.out, files, spec.outputs,
                      {"complete": len(files) == len(shards), "shards": len(shards),
                       "committed_shards": len(files), "model": spec.model.ref})


def open(out: str) -> Result:
    """Open a job's ``features.h5``: ``.names``, ``["output"]`` datasets, ``.errors``,
    ``.columns``."""
    return open_view(out)
