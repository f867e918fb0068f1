"""Stops: Ctrl-C (SIGINT to the process group) and SIGTERM to the driver end the job cleanly."""

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

pytestmark = pytest.mark.slow

N = 240
JOB = ["--shard-size", "40", "--batch-size", "8", "--workers", "1", "--loaders", "1",
       *TINY, "--model", "tinynet:slow"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop-images")
    make_images(root, N)
    return root


@pytest.mark.parametrize("how", ["sigint-group", "sigterm-driver"])
def test_stop_leaves_nothing_behind_and_resumes(images, tmp_path, how):
    out = tmp_path / "out"
    job = start(str(images), "-o", str(out), *JOB, start_new_session=True)
    try:
        assert wait_for(lambda: list((out / "shards").glob("*.json")), timeout=90)
        family = descendants(job.pid)
        if how == "sigint-group":
            os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(job.pid, signal.SIGTERM)
        _, stderr = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, stderr
    assert "stopped" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    # the resource tracker may take a moment to see the driver's end; nothing may stay longer
    left = wait_for(lambda: not [p for p in family if alive(p)], timeout=5)
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
    out = tmp_path / "out"
    job = start(str(images), "-o", str(out), *JOB, "--stall-timeout", "3")
    try:
        assert wait_for(lambda: list((out / "shards").glob("*.json")), timeout=90)
        workers, _ = workers_and_loaders(job.pid)
        os.kill(workers[0], signal.SIGSTOP)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
    assert job.returncode == 0, stderr
    assert "made no progress for 3 s" in stderr
    with h5py.File(out / "features.h5", "r") as f:
        names = f["names"][()]
    assert len(names) == len(set(names)) == N
