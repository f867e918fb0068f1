"""The run's event log, progress file, --progress jsonl stream and the lock, fed real messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gristmill import ledger, runlog
from gristmill.engines.messages import (
    Progress,
    Receipt,
    ShardFailed,
    ShardRetried,
    WorkerReady,
    WorkerReplaced,
)
from gristmill.errors import SpecError
from gristmill.progress import Report, Tracker


def feed(out, sinks, messages, *, skipped=0):
    report = Report(out=str(out), items=40, shards=5, shards_skipped=skipped)
    status = {"run": "r1", "pid": os.getpid(), "host": "h", "started": time.time(),
              "items": 40, "items_pending": 40 - 8 * skipped, "shards": 5}
    tracker = Tracker(report, 40 - 8 * skipped, False, sinks=sinks, status=status)
    tracker.begin({"event": "start", "time": time.time(), "run": "r1", "spec": {"x": 1},
                   "machine": {"host": "h"}, "plans": []})
    for m in messages:
        tracker(m)
    return tracker, report


def run_messages(t0: float) -> list:
    return [
        WorkerReady(0, 101, "cpu", 2, 1, 0.5), WorkerReady(1, 102, "cpu", 2, 1, 0.5),
        Progress(8),
        Receipt(0, 7, 1, True, {"load": 0.2, "model": 1.0, "write": 0.1}, 0, t0, t0 + 1),
        ShardFailed(1, "model: RuntimeError: boom"),
        ShardRetried(1, 2, 3, "model: RuntimeError: boom"),
        WorkerReplaced(1, 102, "killed by SIGKILL", (1, 2)),
        WorkerReady(1, 103, "cpu", 2, 1, 0.4),
        Progress(8), Receipt(1, 8, 0, True, {"load": 0.2, "model": 1.0}, 1, t0 + 2, t0 + 3),
        Receipt(1, 8, 0, False, {}, 0, t0 + 2, t0 + 3.5),  # a duplicate: not committed twice
    ]


def test_every_event_is_logged_in_order_and_the_end_counts_commits(tmp_path):
    log = runlog.RunLog(str(tmp_path), "20260101T000000Z-1")
    tracker, report = feed(tmp_path, [log], run_messages(time.time()), skipped=1)
    report.shards_failed = {4: "loader process died 3 times"}
    tracker.close("failed")
    (events,) = runlog.read_runs(str(tmp_path))
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "ready", "ready", "shard", "failed", "retried", "replaced", "ready",
                     "shard", "shard", "end"]
    replaced = events[6]
    assert replaced["pid"] == 102 and replaced["shards"] == [1, 2]
    assert replaced["reason"] == "killed by SIGKILL"
    assert [e["committed_total"] for e in events if e["event"] == "shard"] == [2, 3, 3]
    assert events[3]["worker"] == 0 and events[3]["finished"] - events[3]["started"] == 1
    end = events[-1]
    assert end["outcome"] == "failed" and end["ok"] == 15 and end["errors"] == 1
    assert end["shards_committed"] == 2 and end["shards_failed"] == {"4": "loader process died "
                                                                        "3 times"}
    assert all(e["time"] > 0 for e in events)


def test_a_torn_last_line_is_skipped_and_a_file_without_start_ignored(tmp_path):
    log = runlog.RunLog(str(tmp_path), "20260101T000000Z-1")
    feed(tmp_path, [log], [WorkerReady(0, 1, "cpu", 1, 1, 0.1)])
    log.file.write('{"event": "shard", "sha')  # the driver died mid-line
    log.close()
    (tmp_path / "runs" / "20250101T000000Z-9.jsonl").write_text('{"event": "shard"}\n')
    (events,) = runlog.read_runs(str(tmp_path))
    assert [e["event"] for e in events] == ["start", "ready"]


def test_progress_file_is_rewritten_with_counts_rate_and_eta(tmp_path, monkeypatch):
    from gristmill import progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(progress, "RATE_SECONDS", 0.0)
    t0 = time.time()
    tracker, _ = feed(tmp_path, [], [])
    first = runlog.read_progress(str(tmp_path))
    assert first["state"] == "running" and first["items_done"] == 0 and first["pid"] == os.getpid()
    time.sleep(0.05)
    tracker(Progress(8))
    tracker(Receipt(0, 8, 0, True, {}, 0, t0, time.time()))
    now = runlog.read_progress(str(tmp_path))
    assert now["items_done"] == 8 and now["shards_committed"] == 1 and now["rate"] > 0
    assert now["eta_seconds"] == pytest.approx(32 / now["rate"], rel=0.05, abs=0.06)
    assert now["updated"] >= first["updated"]
    tracker.close("stopped")
    assert runlog.read_progress(str(tmp_path))["state"] == "stopped"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_jsonl_stream_parses_and_its_commit_count_follows_the_receipts(tmp_path, monkeypatch):
    from gristmill import progress

    monkeypatch.setattr(progress, "RATE_SECONDS", 0.0)
    path = tmp_path / "events.jsonl"
    stream = runlog.JsonlStream(str(path))
    tracker, _ = feed(tmp_path, [stream], run_messages(time.time()))
    tracker.close("complete")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"start", "shard", "replaced", "retried", "rate", "end"} <= kinds
    assert "ready" not in kinds and "spec" not in events[0]  # the log has those, not the stream
    assert [e["committed_total"] for e in events if e["event"] == "shard"] == [1, 2, 2]
    assert events[-1]["committed_total"] == 2


def test_lock_of_a_killed_driver_is_free(tmp_path):
    out = str(tmp_path / "out")
    code = ("import sys, time; from gristmill import ledger\n"
            "with ledger.lock_out(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code, out], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert ledger.holder(out)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert ledger.holder(out) is None
    with ledger.lock_out(out) as info:  # the next driver takes it at once
        assert info["pid"] == os.getpid()


def test_a_jsonl_target_in_a_missing_folder_is_refused_before_the_run(tmp_path):
    from gristmill.spec import JobSpec

    spec = JobSpec(sources=("x",), out=str(tmp_path / "o"),
                   progress_jsonl=str(tmp_path / "absent" / "e.jsonl"))
    with pytest.raises(SpecError, match=r"jsonl=.*absent/e\.jsonl: its folder does not exist"):
        spec.check()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "e.jsonl").mkdir()  # a folder where the file should go
    with pytest.raises(SpecError, match="cannot be written"):
        runlog.JsonlStream(str(tmp_path / "ro" / "e.jsonl"))
