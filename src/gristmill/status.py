"""``gristmill status OUT``: how far a job is, from OUT alone, while it runs or after it stopped.

The job as it stands (``outdir.reopen``: the spec, the frozen input list and its segments, the
shards planned as a run plans them, and the markers, which say what is committed whatever happened
to the driver) says how much there is and how much is done; the last run's log says which shards it
gave up; the progress file gives the driver's current rate; ``ledger.holder`` says whether a live
driver holds OUT right now (the kernel drops its lock when it dies, so a killed driver is seen as
gone).
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import ledger, outdir, runlog

# ``gristmill status --json``: a stable interface (README); keys are added, never removed
KEYS = ("out", "state", "driver", "shards", "committed_shards", "failed_shards", "failed_reasons",
        "pending_shards", "items", "items_done", "ok", "errors", "rate", "eta_seconds",
        "progress_updated", "runs", "last_run", "last_driver", "items_estimated",
        "containers", "containers_done", "bytes", "bytes_done")


def status(out: str) -> dict[str, Any]:
    """The job's state as plain data; ``SpecError`` when OUT holds no gristmill job."""
    job = outdir.reopen(out)
    done = job.done
    runs = runlog.read_runs(out)
    last = runs[-1] if runs else []
    end = next((e for e in reversed(last) if e["event"] == "end"), None)
    failed = {int(k): v for k, v in (end or {}).get("shards_failed", {}).items()
              if int(k) not in done}
    ok, errors = job.ok, job.errors
    holder = ledger.holder(out)
    progress = runlog.read_progress(out) or {}
    if holder:
        state = "running"
    elif job.complete:
        state = "complete"
    elif end is not None:
        state = end["outcome"] if end["outcome"] != "complete" else "incomplete"
    elif last:
        state = "crashed"  # a run started, wrote no end, and no longer holds OUT
    else:
        state = "not started"
    items_left = job.items_pending
    rate = progress.get("rate") if state == "running" else None
    box = job.containers()
    eta = round(items_left / rate, 1) if rate else None
    if box is not None and box.bytes_total and state == "running" and last:
        eta = _eta_from_bytes(job, last, box.bytes_total - box.bytes_done)
    return {
        "out": os.path.abspath(out), "state": state, "driver": holder,
        "shards": len(job.shards), "committed_shards": len(done),
        "failed_shards": sorted(failed), "failed_reasons": {str(k): v for k, v in failed.items()},
        "pending_shards": len(job.shards) - len(done) - len(failed),
        "items": job.items, "items_done": ok + errors, "ok": ok, "errors": errors,
        "rate": rate, "eta_seconds": eta,
        "progress_updated": progress.get("updated"), "runs": len(runs),
        "last_run": last[0].get("run") if last else None,
        "last_driver": {k: last[0].get(k) for k in ("pid", "host")} if last else None,
        "items_estimated": job.estimated,
        "containers": box.total if box else None, "containers_done": box.done if box else None,
        "bytes": box.bytes_total if box else None, "bytes_done": box.bytes_done if box else None,
    }


def _eta_from_bytes(job: outdir.JobState, run: list[dict[str, Any]], left: int) -> float | None:
    """Seconds left at the bytes per second this run committed: a tar's items are known only
    once it is read, its bytes from the start."""
    ids = {e["shard"] for e in run if e["event"] == "shard"}
    sizes = job.inputs.unit_bytes()
    done = sum(int(sizes[s.start:s.stop].sum()) for s in job.shards if s.id in ids)
    elapsed = time.time() - float(run[0].get("time") or 0)
    return round(left * elapsed / done, 1) if done and elapsed > 0 else None


def describe(s: dict[str, Any]) -> str:
    """The status in a few lines for a terminal."""
    head = f"{s['out']}: {s['state']}"
    if s["driver"]:
        head += (f" (driver pid {s['driver'].get('pid')} on {s['driver'].get('host')}, since "
                 f"{_clock(s['driver'].get('started'))})")
    elif s["state"] == "crashed" and s["last_driver"]:
        head += (f" (driver pid {s['last_driver']['pid']} on {s['last_driver']['host']} stopped "
                 "without finishing; rerun the same command to resume)")
    lines = [head,
             f"  shards: {s['committed_shards']} committed, {s['pending_shards']} pending, "
             f"{len(s['failed_shards'])} failed, of {s['shards']}",
             f"  items: {s['items_done']} of {'about ' if s['items_estimated'] else ''}"
             f"{s['items']} done ({s['ok']} ok, {s['errors']} errors)"]
    if s["containers"] is not None:
        size = (f" ({s['bytes_done'] / 1e6:.1f} of {s['bytes'] / 1e6:.1f} MB)" if s["bytes"]
                else "")
        lines.append(f"  containers: {s['containers_done']} of {s['containers']} done{size}")
    if s["rate"] is not None:
        eta = f", ETA {s['eta_seconds']:.0f} s" if s["eta_seconds"] is not None else ""
        age = time.time() - s["progress_updated"] if s["progress_updated"] else 0
        lines.append(f"  rate: {s['rate']:.1f} items/s{eta} (updated {age:.0f} s ago)")
    for shard, reason in list(s["failed_reasons"].items())[:5]:
        lines.append(f"  FAILED shard {shard}: {reason}")
    return "\n".join(lines)


def _clock(t: float | str | None) -> str:
    if isinstance(t, str):  # the lock file's own words ("2026-12-02 18:40:00 UTC")
        return t
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"
