"""Stops: Ctrl-C (SIGINT to the process group) and SIGTERM to the driver end the job cleanly.

The job runs ``tinynet:gated``: its worker commits the first shard and then holds its next batch
until the test releases it, so each signal lands while the job is certainly running, however busy
the machine (see tinynet.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import h5py
import pytest
from faultkit import (
    TINY,
    descendants,
    make_images,
    run,
    shm_segments,
    start,
    wait_for,
    workers_and_loaders,
)
from jobhelp import alive
from tinynet import FREE, HOLD, held

pytestmark = pytest.mark.slow

N = 240
JOB = ["--shard-size", "40", "--batch-size", "8", "--workers", "1", "--loaders", "1",
       *TINY, "--model", "tinynet:gated"]
# the worker runs the first shard's 5 batches (one loader delivers them in order), commits it,
# then holds the first batch of the next shard
FIRST_SHARD = {FREE: "5"}


def start_held(images: Path, out: Path, hold: Path, *extra: str, **kw):
    """Start the job with its worker held after the first shard; return once it holds."""
    hold.touch()
    job = start(str(images), "-o", str(out), *JOB, *extra,
                extra_env={HOLD: str(hold), **FIRST_SHARD}, **kw)
    try:
        assert wait_for(lambda: held(str(hold)), timeout=120), "the worker never held a batch"
        assert list((out / "shards").glob("*.json")), "held before the first shard committed"
        assert job.poll() is None
    except BaseException:
        job.kill()
        job.communicate()
        raise
    return job


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop-images")
    make_images(root, N)
    return root


@pytest.mark.parametrize("how", ["sigint-group", "sigterm-driver"])
def test_stop_leaves_nothing_behind_and_resumes(images, tmp_path, how):
    out, hold = tmp_path / "out", tmp_path / "hold"
    job = start_held(images, out, hold, start_new_session=True)
    try:
        family = descendants(job.pid)
        if how == "sigint-group":
            os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(job.pid, signal.SIGTERM)
        # the signal is pending in the driver once kill() returns: released now, the worker
        # cannot finish the job before the driver stops it
        hold.unlink()
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, stderr
    assert "stopped" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    # the resource tracker may take a moment to see the driver's end (a bound, not a pause: a
    # busy machine may need more than a quiet one)
    left = wait_for(lambda: not [p for p in family if alive(p)], timeout=30)
    assert left, [_cmd(p) for p in family if alive(p)]
    assert not {s for s in shm_segments() if s.startswith(f"gristmill-{job.pid}-")}
    assert not list((out / "shards").glob("*.tmp"))
    again = run(str(images), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr and " 0 already done" not in again.stderr


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def test_stalled_worker_is_replaced(images, tmp_path):
    """A worker that stops making progress (here: SIGSTOP) is killed after --stall-timeout and
    its shards run elsewhere; every input still appears exactly once."""
    out, hold = tmp_path / "out", tmp_path / "hold"
    job = start_held(images, out, hold, "--stall-timeout", "3")
    try:
        workers, _ = workers_and_loaders(job.pid)
        assert workers == held(str(hold))
        os.kill(workers[0], signal.SIGSTOP)
        hold.unlink()  # for its replacement
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
    assert job.returncode == 0, stderr
    assert "made no progress for 3 s" in stderr
    with h5py.File(out / "features.h5", "r") as f:
        names = f["names"][()]
    assert len(names) == len(set(names)) == N
