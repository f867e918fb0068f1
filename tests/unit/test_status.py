"""gristmill status from OUT alone: markers, the frozen list, the last run's end, the lock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from outkit import commit, make_job

from gristmill import increment, ledger, outdir, runlog, status
from gristmill.errors import SpecError
from gristmill.sources import InputList


def make_out(out, committed):
    """A job of 50 inputs in 5 shards of 10, with ``committed`` shards committed (one error
    row each)."""
    state = make_job(out, [f"{i:03d}.jpg" for i in range(50)], shard_size=10)
    for k in range(committed):
        commit(state, k, {f"{k * 10 + 9:03d}.jpg": ("decode", "bad")})


def log_run(out, *events):
    log = runlog.RunLog(str(out), "20260101T000000Z-7")
    log.write({"event": "start", "time": time.time(), "run": "r", "pid": 4242, "host": "elsewhere"})
    for e in events:
        log.write(e)
    log.close()


def test_after_a_run_that_gave_up_shards(tmp_path):
    make_out(tmp_path, 3)
    log_run(tmp_path, {"event": "end", "time": time.time(), "outcome": "failed",
                       "shards_failed": {"3": "model: RuntimeError: boom", "1": "committed later"}})
    s = status.status(str(tmp_path))
    assert s["state"] == "failed" and s["driver"] is None
    assert (s["committed_shards"], s["failed_shards"], s["pending_shards"]) == (3, [3], 1)
    assert (s["items_done"], s["ok"], s["errors"], s["items"]) == (30, 27, 3, 50)
    assert "FAILED shard 3: model: RuntimeError: boom" in status.describe(s)


def test_a_crashed_driver_and_a_running_one(tmp_path):
    make_out(tmp_path, 2)
    log_run(tmp_path, {"event": "shard", "time": time.time()})
    crashed = status.status(str(tmp_path))
    assert crashed["state"] == "crashed" and crashed["rate"] is None
    assert "driver pid 4242 on elsewhere stopped without finishing" in status.describe(crashed)
    runlog.write_progress(str(tmp_path), {"rate": 4.0, "updated": time.time()})
    with ledger.lock_out(str(tmp_path)):
        running = status.status(str(tmp_path))
    assert running["state"] == "running" and running["driver"]["pid"] == os.getpid()
    assert running["rate"] == 4.0 and running["eta_seconds"] == 30 / 4.0
    assert "ETA 8 s" in status.describe(running)


def test_complete_and_not_a_job(tmp_path):
    make_out(tmp_path / "done", 5)
    assert status.status(str(tmp_path / "done"))["state"] == "complete"
    with pytest.raises(SpecError, match="holds no gristmill job"):
        status.status(str(tmp_path))


def test_status_counts_the_shards_of_every_segment_after_append_and_retry(tmp_path):
    """32 inputs in shards of 5 (the last partial), 7 appended, 2 error rows retried: status
    plans the segments as the run did (10 shards), not the grown list afresh (9)."""
    state = make_job(tmp_path, [f"{i:03d}.jpg" for i in range(32)], shard_size=5)
    for k in range(7):
        commit(state, k, {"003.jpg": ("decode", "bad")} if k == 0 else None)
    listed = InputList.from_names(b"/photos", [f"{i:03d}.jpg".encode() for i in range(39)])
    state = outdir.save(state.grown("append", increment.extend(
        state.inputs, listed, increment.new_inputs(state.inputs, listed))), "", grown=True)
    for k in (7, 8):
        commit(state, k, {"036.jpg": ("read", "gone")} if k == 7 else None)
    state = outdir.save(state.grown("retry", state.inputs.concat(
        increment.errors_to_retry(state.refreshed()))), "", grown=True)
    assert [len(s) for s in state.shards] == [5] * 6 + [2] + [5, 2] + [2]
    s = status.status(str(tmp_path))
    assert (s["shards"], s["committed_shards"], s["pending_shards"]) == (10, 9, 1)
    assert (s["items"], s["items_done"], s["errors"]) == (41, 39, 2)
    commit(state, 9)
    s = status.status(str(tmp_path))
    assert s["state"] == "complete" and (s["shards"], s["committed_shards"]) == (10, 10)


def test_status_json_keys_are_the_documented_stable_interface(tmp_path):
    make_out(tmp_path, 1)
    assert tuple(status.status(str(tmp_path))) == status.KEYS
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    from gristmill import preview

    for key in (*status.KEYS, *preview.KEYS, *preview.ESTIMATE_KEYS):
        assert f"`{key}`" in readme, key
