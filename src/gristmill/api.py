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
import time
from collections.abc import Sequence
from typing import Any

from . import ledger, runlog
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


def execute(spec: JobSpec, command: str | None = None) -> Report:
    """Prepare, run the pending shards on the spec's engine, and refresh ``features.h5``.

    ``command`` is how the run is named in its log and report (the CLI gives its command line).
    """
    spec.check()  # before starting anything for it
    # the engine's worker processes start now, their imports overlapping the preparation
    if spec.engine == "ray":
        from .engines.ray import prestart

        actors = prestart(spec)
        try:
            return _execute(spec, None, actors, command)
        finally:
            actors.close()  # the actors the engine did not take (a job that failed early)
    return _execute(spec, forkserver.warm(), None, command)


def _execute(spec: JobSpec, warmup: forkserver.Warmup | None, actors: Any,
             command: str | None) -> Report:
    job = prepare(spec, settle=warmup.settle if warmup else None)
    spec = job.spec
    with ledger.lock_out(spec.out) as lock:
        try:
            return _run(spec, job, actors, command or runlog.api_command(), lock)
        finally:
            write_report_quietly(spec.out)


def _run(spec: JobSpec, job: Any, actors: Any, command: str, lock: dict[str, Any]) -> Report:
    report = Report(out=spec.out, items=len(job.inputs), shards=len(job.shards),
                    shards_skipped=len(job.done), resumed=job.resumed)
    now = time.time()
    run_id = runlog.new_run_id(now)
    # the stream first: a target that cannot be opened is a SpecError before anything is logged
    stream = [runlog.JsonlStream(spec.progress_jsonl)] if spec.progress_jsonl else []
    sinks: list[Any] = [runlog.RunLog(spec.out, run_id), *stream]
    pending = sum(len(s) for s in job.pending)
    status = {"run": run_id, "pid": lock["pid"], "host": lock["host"], "started": now,
              "items": len(job.inputs), "items_pending": pending, "shards": len(job.shards)}
    tracker = Tracker(report, pending, spec.progress, sinks=sinks, status=status)
    tracker.begin(runlog.start_event(spec, job, run_id, command, now))
    from .engines.local import raise_on_sigterm

    restore = raise_on_sigterm()
    outcome = "error"
    try:
        engine = _engine(spec, job, tracker, actors)
        report.shards_failed = engine.run(job.pending)
        outcome = "failed" if report.shards_failed else "complete"
    except JobFailed:
        outcome = "failed"
        with contextlib.suppress(OSError):  # what was committed stays readable
            refresh_view(spec, job.shards)
        raise
    except KeyboardInterrupt:
        outcome = "stopped"
        raise
    finally:
        restore()
        tracker.close(outcome)
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


def write_report_quietly(out: str) -> None:
    """``OUT/report.html``; a report that cannot be written is one warning, never a failed run."""
    try:
        from .report import write_report

        write_report(out)
    except Exception as exc:
        log.warning("could not write %s: %s: %s", os.path.join(out, "report.html"),
                    type(exc).__name__, exc)
        log.debug("report failed", exc_info=True)


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
    """Open a job's ``features.h5``: ``.names``, ``["output"]`` datasets, ``.errors``."""
    return open_view(out)
