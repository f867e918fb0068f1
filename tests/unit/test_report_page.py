"""report.html from run logs: a killed run and its resume, a replaced worker, retries, errors,
hostile names escaped, the bottleneck in words. The logs are written by the real Tracker."""

from __future__ import annotations

import html.parser
import json
import time

import outkit
import pytest

from gristmill import report, runlog
from gristmill.engines.messages import (
    Receipt,
    ShardFailed,
    ShardRetried,
    WorkerReady,
    WorkerReplaced,
)
from gristmill.progress import Report, Tracker

EVIL = '<script>alert("x")</script>'


def a_run(out, run_id, t0, messages, outcome=None):
    sinks = [runlog.RunLog(str(out), run_id)]
    tracker = Tracker(Report(out=str(out)), 32, False, sinks=sinks)
    tracker.begin({"event": "start", "time": t0, "run": run_id, "items": 32, "shards": 4,
                   "command": f"gristmill run photos -o {EVIL}", "spec": {"out": EVIL},
                   "machine": {"host": "h"}, "versions": {"gristmill": "0.1.0"}, "plans": []})
    for message in messages:
        tracker(message)
    if outcome:
        tracker.close(outcome)
    else:
        sinks[0].close()  # killed: no end line


BAD = f"{EVIL}.jpg"
NAMES = [BAD, *(f"a{i}.jpg" for i in range(7)),
         *(f"b{k}{i}.jpg" for k in (1, 2, 3) for i in range(8))]


def make_job(out, fmt="hdf5", legacy=False):
    """Run 1: two workers, worker 1 replaced, shard 1 retried, driver killed. Run 2 finishes."""
    t = time.time()  # the Tracker stamps events with the clock; receipts carry their own times
    stage = {"load": 0.5, "model": 4.0, "write": 0.2}  # model-bound: loaders mostly wait
    a_run(out, "20240101T000000Z-1", t, [
        WorkerReady(0, 11, "cpu", 1, 1, 0.2), WorkerReady(1, 12, "cpu", 1, 1, 0.2),
        Receipt(0, 7, 1, True, stage, 0, t + 1, t + 5),
        ShardFailed(1, f"model: RuntimeError: {EVIL}"),
        WorkerReplaced(1, 12, "killed by SIGKILL", (1,)),
        ShardRetried(1, 2, 3, "worker died (exit code -9)"),
        WorkerReady(1, 13, "cpu", 1, 1, 0.2),
        Receipt(1, 8, 0, True, stage, 1, t + 6, t + 10),
    ])
    t2 = t + 3600
    a_run(out, "20240101T010000Z-2", t2, [
        WorkerReady(0, 21, "cpu", 1, 1, 0.2),
        Receipt(2, 8, 0, True, stage, 0, t2 + 1, t2 + 5),
        Receipt(3, 8, 0, True, stage, 0, t2 + 5, t2 + 9),
    ], outcome="complete")
    state = outkit.make_job(out, NAMES, shard_size=8, fmt=fmt)
    outkit.commit(state, 0, {BAD: ("decode", f"cannot identify image file '/data/{BAD}'")},
                  legacy=legacy)
    for k in (1, 2, 3):
        outkit.commit(state, k)


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


@pytest.mark.parametrize("fmt,legacy", [("hdf5", False), ("hdf5", True), ("parquet", False),
                                        ("npy", False)])
def test_report_covers_both_runs_marks_the_replacement_and_escapes_every_name(tmp_path, fmt,
                                                                              legacy):
    """In every format, and from an HDF5 marker older than error rows in markers."""
    out = tmp_path / "out"
    make_job(out, fmt, legacy)
    path = report.write_report(str(out))
    page = open(path, encoding="utf-8").read()
    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.tags and EVIL not in page  # every name went through escape
    assert html_escaped(EVIL) in page
    assert page.count('class="shard"') == 4
    assert page.count('fill="#d62728"><title>worker 1 (pid 12) replaced: killed by SIGKILL') == 1
    assert "shard 1: 8 ok, 0 errors, 4.0 s (after a retry)" in page
    assert ">run 1<" in page and ">run 2<" in page
    assert "no end recorded (killed?)" in page and ">complete<" in page
    assert "model-bound: loaders waited" in page
    assert "32 of 32 items done (31 ok, 1 errors); 4 of 4 shards committed; 2 run(s)" in page
    # the item error is grouped by stage and a reason without its path
    assert "<td>decode</td><td>cannot identify image file …</td><td>1</td>" in page
    assert "worker replaced: killed by SIGKILL" in page
    # job time: the hour between the runs is not drawn (runs back to back)
    runs = report.load_runs(str(out))
    assert runs[1].offset == runs[0].seconds == 10.0


def test_bottleneck_names_the_stage_that_waits_least():
    def proc(model, load, write=0.0):
        p = report.Process(0, 0, 1, "cpu", 1, 2, begin=0.0, stop=10.0)
        p.seconds.update(model=model, load=load, write=write)
        return p

    assert report.bottleneck([proc(9.0, 2.0)]) == (
        "model-bound: loaders waited 90% of the time (the model computed 90% of the time)")
    assert report.bottleneck([proc(3.0, 18.0)]).startswith(
        "decode-bound: the model waited 70% of the time")
    assert report.bottleneck([proc(2.0, 4.0, 6.0)]).startswith("write-bound")


def test_report_of_a_job_without_logs_still_renders(tmp_path):
    out = tmp_path / "out"
    outkit.commit(outkit.make_job(out, ["a.jpg"], shard_size=8), 0)
    page = report.build(str(out))
    assert "No worker became ready" in page and "No shard was computed yet" in page
    assert json.loads(json.dumps(report.throughput([])))  == [[], 0.0]


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)
