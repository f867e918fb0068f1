"""What a run leaves in OUT for ``status`` and the report: an event log and a progress file.

Every run appends one file ``OUT/runs/<run id>.jsonl``: a ``start`` line (command, spec, machine,
versions, counts, worker plans), then one line per engine event (``ready``, ``shard``, ``failed``,
``retried``, ``replaced``, ``crashed``), a ``rate`` line every few seconds, and an ``end`` line.
Each line is flushed when written, so a driver killed at any point leaves every line before the
kill; a torn last line is skipped by ``read_runs``. Across resumes the files, in name order, are
the whole job's history.

``OUT/progress.json`` is rewritten atomically a few times a minute: counts, rate, ETA, the driver's
pid and host. It is advice for ``gristmill status``; the markers are the truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import platform
import socket
import sys
import time
from typing import Any, TextIO

from . import ledger
from .engines.messages import (
    Receipt,
    ShardFailed,
    ShardRetried,
    WorkerCrashed,
    WorkerReady,
    WorkerReplaced,
)
from .errors import SpecError
from .tuning import proc_field

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
PROGRESS_FILE = "progress.json"
_KINDS = {WorkerReady: "ready", Receipt: "shard", ShardFailed: "failed", ShardRetried: "retried",
          WorkerReplaced: "replaced", WorkerCrashed: "crashed"}
# what --progress jsonl streams (the log keeps everything)
STREAMED = ("start", "shard", "failed", "retried", "replaced", "rate", "end")


def event_of(message: Any, now: float | None = None) -> dict[str, Any] | None:
    """An engine message as a log line (None for messages the log does not keep)."""
    kind = _KINDS.get(type(message))
    if kind is None:
        return None
    data = dataclasses.asdict(message)
    if kind == "replaced":
        data["shards"] = list(data["shards"])
    return {"event": kind, "time": time.time() if now is None else now} | data


def new_run_id(now: float) -> str:
    """Sortable by start time; the pid keeps two drivers started in the same second apart."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{os.getpid()}"


def machine() -> dict[str, Any]:
    """The host the driver runs on: name, OS, Python, cores, memory, CPU and GPU models."""
    info: dict[str, Any] = {"host": socket.gethostname(), "os": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    with contextlib.suppress(AttributeError):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    info["cpu"] = proc_field("/proc/cpuinfo", "model name")
    memory = proc_field("/proc/meminfo", "MemTotal")
    if memory:
        info["memory_gb"] = round(int(memory.split()[0]) / 2**20, 1)
    torch = sys.modules.get("torch")  # never imported here just to ask (it takes seconds)
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("gristmill", "torch", "numpy", "h5py", "pillow", "simplejpeg", "onnxruntime",
                 "ray"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def start_event(spec: Any, job: Any, run_id: str, command: str, now: float) -> dict[str, Any]:
    """The first line of a run's log: what ran, where, with what, over how much."""
    plans = [{k: getattr(w, k) for k in ("index", "device", "threads", "loaders", "slots",
                                         "batch_size", "turns")} for w in job.workers]
    return {"event": "start", "time": now, "run": run_id, "command": command,
            "pid": os.getpid(), "host": socket.gethostname(), "items": job.state.items,
            "items_estimated": job.state.estimated,
            "shards": len(job.shards), "shard_size": spec.shard_size,
            "shards_done": len(job.state.done), "pending_items": sum(len(s) for s in job.pending),
            "resumed": job.resumed, "engine": spec.engine, "plans": plans,
            "spec": json.loads(spec.to_json()), "machine": machine(), "versions": versions()}


def api_command() -> str:
    """How a run started from Python is named in its log: the script that called it."""
    import shlex

    return f"gristmill.run() from: {shlex.join([sys.executable, *sys.argv])}"


class RunLog:
    """``OUT/runs/<run id>.jsonl``, appended and flushed line by line."""

    def __init__(self, out: str, run_id: str) -> None:
        folder = os.path.join(out, RUNS_DIR)
        self.path = os.path.join(folder, run_id + ".jsonl")
        self.file: TextIO | None = None
        try:
            os.makedirs(folder, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:  # a full disk must not stop the job: the log is advice
            log.warning("cannot write %s (%s); the run goes on without its log", self.path,
                        exc.strerror or exc)

    def write(self, event: dict[str, Any]) -> None:
        if self.file is None:
            return
        try:
            self.file.write(json.dumps(event, default=str) + "\n")
            self.file.flush()
        except OSError as exc:  # a full disk must not stop the job: the log is advice
            log.warning("cannot write %s (%s); the run goes on without its log", self.path, exc)
            self.close()

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None


class JsonlStream:
    """``--progress jsonl``: the streamed events, one JSON object per line, to stderr or a file."""

    def __init__(self, target: str) -> None:
        self.own = target not in ("", "-")
        try:
            self.file: TextIO = open(target, "a", encoding="utf-8") if self.own else sys.stderr  # noqa: SIM115
        except OSError as exc:
            raise SpecError(f"--progress jsonl={target} cannot be written: "
                            f"{exc.strerror or exc}") from None

    def write(self, event: dict[str, Any]) -> None:
        if event["event"] not in STREAMED:
            return
        if event["event"] == "start":  # the spec and machine are in the run log, not the stream
            event = {k: v for k, v in event.items() if k not in ("spec", "machine", "plans")}
        try:
            self.file.write(json.dumps(event, default=str) + "\n")
            self.file.flush()
        except (OSError, ValueError):
            log.warning("cannot write progress events; stopping them", exc_info=True)
            self.own, self.file = False, open(os.devnull, "w")  # noqa: SIM115

    def close(self) -> None:
        if self.own:
            self.file.close()


def write_progress(out: str, data: dict[str, Any]) -> None:
    """Replace ``OUT/progress.json`` atomically (a reader sees the old or the new one)."""
    try:
        ledger.write_atomic(os.path.join(out, PROGRESS_FILE),
                            json.dumps(data, indent=1, default=str).encode())
    except OSError as exc:
        log.warning("cannot write %s: %s", os.path.join(out, PROGRESS_FILE), exc)


def read_progress(out: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(out, PROGRESS_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_runs(out: str) -> list[list[dict[str, Any]]]:
    """Every run's events, oldest run first; lines that do not parse (a torn end) are skipped."""
    runs = []
    for path in sorted(glob.glob(os.path.join(glob.escape(out), RUNS_DIR, "*.jsonl"))):
        events = []
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and "event" in event:
                        events.append(event)
        except OSError:
            continue
        if events and events[0]["event"] == "start":
            runs.append(events)
    return runs
