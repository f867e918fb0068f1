"""The Python API: ``run`` a job, ``open`` its output.

Example::

    import gristmill

    report = gristmill.run(["photos/"], "out/", outputs=["features", "logits"])
    with gristmill.open("out/") as result:
        names, feats = result.names, result["features"][:]
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import ledger, outdir, runlog, sinks
from .engines import base as engines
from .engines.base import Backend
from .errors import JobFailed, SourceChanged, SpecError
from .job import prepare
from .named import parse_model
from .outdir import JobState
from .prepared import PreparedJob
from .progress import Report, Tracker
from .sinks.base import Result
from .spec import JobSpec, ModelSpec, Preprocess
from .store import Store

log = logging.getLogger(__name__)


def run(sources: Sequence[str] | str | JobSpec, out: str | None = None, *,
        model: str | type | ModelSpec = "efficientnet-lite0", outputs: Sequence[str] = (),
        preprocess: Preprocess | None = None,
        models: dict[str, str | type | ModelSpec] | None = None, **options: Any) -> Report:
    """Run a model over every input of ``sources`` into ``out``; returns the run's ``Report``.

    ``model`` is a reference (``--model``'s forms), a ``ModelSpec``, or a callable class (Ray
    Data's way, see ``gristmill.models.classes``) defined in an importable module.
    ``sources`` may also be a ready ``JobSpec`` (then ``out`` and the rest are ignored). Options are
    the ``JobSpec`` fields (``batch_size``, ``shard_size``, ``workers``, ``device``, ``overwrite``,
    ...). ``models`` runs several models in one pass: ``{"clip": "hf:./clip", "nsfw":
    "nsfw.onnx", "aesthetic": "heads:Aesthetic@clip/image_embeds"}`` (a ``ModelSpec`` value
    carries its own ``preprocess`` overrides), outputs ``NAME/OUTPUT``. Rerunning the same call
    resumes. Raises ``SpecError`` for a bad job (nothing started) and
    ``JobFailed`` when shards failed every attempt (committed shards are kept).
    """
    if isinstance(sources, JobSpec):
        spec = sources
    else:
        if out is None:
            raise TypeError("run() needs an output folder")
        spec = JobSpec(
            sources=(sources,) if isinstance(sources, str) else tuple(sources), out=out,
            model=model if isinstance(model, ModelSpec) else ModelSpec(ref=model_ref(model)),
            models=named_models(models or {}), outputs=tuple(outputs),
            preprocess=preprocess or Preprocess(), **options)
    return execute(spec)


def model_ref(model: str | type) -> str:
    """``package.module:Class`` for a class (workers import it by that name), else ``model``."""
    if isinstance(model, str):
        return model
    if model.__module__ == "__main__" or "<locals>" in model.__qualname__:
        raise SpecError(f"model class {model.__qualname__} must be defined at the top level of an "
                        "importable module: worker processes import it by name")
    return f"{model.__module__}:{model.__qualname__}"


def named_models(models: dict[str, str | type | ModelSpec]) -> tuple[ModelSpec, ...]:
    """``run(models=...)``'s dict as named ``ModelSpec``s (``REF@OTHER/OUTPUT``: a head)."""
    found = []
    for name, model in models.items():
        if isinstance(model, ModelSpec):
            found.append(dataclasses.replace(model, name=name))
            continue
        _, ref, source = parse_model(f"{name}={model_ref(model)}")
        found.append(ModelSpec(ref=ref, name=name, input=source))
    return tuple(found)


def execute(spec: JobSpec, command: str | None = None) -> Report:
    """Prepare, run the pending shards on the spec's engine, and refresh ``features.h5``.

    OUT is locked first (``ledger.lock_out``: one driver per OUT), before any process starts,
    and stays locked until the view and the report are built. ``command`` is how the run is
    named in its log and report (the CLI gives its command line).
    """
    spec.check()  # before starting anything for it
    with ledger.lock_out(spec.out) as lock:
        # the engine's processes start now, their imports overlapping the preparation
        backend = engines.backend(spec)
        try:
            return _execute(spec, backend, command, lock)
        finally:
            backend.close()  # what the engine did not take (a job that failed early)


def _execute(spec: JobSpec, backend: Backend, command: str | None,
             lock: dict[str, Any]) -> Report:
    job = prepare(spec, settle=backend.settle, devices=backend.devices(),
                  calibrates=backend.calibrates)
    spec = job.spec
    try:
        return _run(spec, job, backend, command or runlog.api_command(), lock)
    finally:
        if not Store(spec.out).remote:  # the run log and report live in a local OUT only
            write_report_quietly(spec.out)


def _run(spec: JobSpec, job: PreparedJob, backend: Backend, command: str,
         lock: dict[str, Any]) -> Report:
    sink = job.state.sink
    report = Report(out=spec.out, items=job.state.items, shards=len(job.shards),
                    shards_skipped=len(job.state.done), resumed=job.resumed, view=sink.view)
    now = time.time()
    run_id = runlog.new_run_id(now)
    local = not Store(spec.out).remote
    # the stream first: a target that cannot be opened is a SpecError before anything is logged
    stream = [runlog.JsonlStream(spec.progress_jsonl)] if spec.progress_jsonl else []
    sinks: list[Any] = [*([runlog.RunLog(spec.out, run_id)] if local else []), *stream]
    pending = sum(len(s) for s in job.pending)
    status = {"run": run_id, "pid": lock["pid"], "host": lock["host"], "started": now,
              "items": job.state.items, "items_pending": pending, "shards": len(job.shards)}
    sizes = job.inputs.unit_bytes()
    tracker = Tracker(report, pending, spec.progress, sinks=sinks,
                      status=status if local else None,
                      shards={s.id: (s.items, int(sizes[s.start:s.stop].sum()))
                              for s in job.pending} if job.state.estimated else None)
    tracker.begin(runlog.start_event(spec, job, run_id, command, now))
    restore = raise_on_sigterm()
    outcome = "error"
    try:
        report.shards_failed = backend.engine(job, tracker).run(job.pending)
        outcome = "failed" if report.shards_failed else "complete"
    except (JobFailed, SourceChanged):
        outcome = "failed"
        with contextlib.suppress(OSError):  # what was committed stays readable
            refresh_view(job.state)
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
            ledger.remove_stale_temps(spec.out, sink.folders(spec.outputs))
        if Store(spec.out).remote:  # the local copies the workers read
            shutil.rmtree(job.cache_dir, ignore_errors=True)
    try:
        refresh_view(job.state)
    except OSError as exc:  # a full or read-only disk: committed shards stay, a rerun rebuilds it
        raise JobFailed(f"cannot write {Store(spec.out).path(sink.view_files[0])}: "
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


def refresh_view(state: JobState) -> str:
    """Rebuild the format's view over every committed shard of the job, in id order."""
    state = state.refreshed()
    attrs = {"complete": state.complete, "shards": len(state.shards),
             "committed_shards": len(state.done), "model": state.spec.model_label}
    return state.sink.refresh_view(state.store, state.committed, state.spec.outputs, attrs)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


def raise_on_sigterm() -> Callable[[], None]:
    """Route SIGTERM to KeyboardInterrupt in the main thread, whatever the engine (a stop is the
    API's to handle: each engine cleans up on KeyboardInterrupt); returns a function that undoes
    it. Off the main thread Python cannot install handlers: nothing changes there."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def open(out: str) -> Result:
    """Open a job's output in any format: ``.names``, ``["output"]``, ``.errors``, ``.columns``.

    HDF5 outputs are read lazily from ``features.h5`` (h5py datasets; close the result);
    Parquet and npy outputs are read from their committed shards into numpy arrays.
    """
    if os.path.isfile(out):  # a view file itself (``out/features.h5``)
        return sinks.open_file(out)
    return outdir.open_result(out)
