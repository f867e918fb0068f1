"""The driver's run of one job, once OUT is locked and the engine's backend started
(``api.execute``): prepare the job, run its pending shards on the engine, track them (progress,
run log, ``progress.json``), refresh the format's view, write the report.

A module apart from ``api`` because it imports the job's whole stack (numpy, the sources, the
sinks and h5py, the model registry, the report): ``api.execute`` imports it only after the local
engine's fork server has started, so those imports overlap the server's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from . import ledger, runlog
from .engines.base import Backend
from .errors import JobFailed, SourceChanged
from .job import prepare
from .outdir import JobState
from .prepared import PreparedJob
from .progress import Report, Tracker
from .spec import JobSpec
from .store import Store

log = logging.getLogger(__name__)


def run_job(spec: JobSpec, backend: Backend, command: str | None,
            lock: dict[str, Any]) -> Report:
    """Prepare ``spec``, run its pending shards on ``backend``'s engine and refresh the view;
    OUT's report is written whatever happens. ``lock``: what ``ledger.lock_out`` gave the caller,
    which holds OUT until this returns."""
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
