"""Stops: Ctrl-C (SIGINT to the process group) and SIGTERM to the driver end the job cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import TINY, descendants, make_images, run, shm_segments, start, wait_for

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "40", "--batch-size", "8", "--workers", "2", "--loaders", "1",
       *TINY, "--model", "tinynet:slow"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop-images")
    make_images(root, 400)
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
    assert not [p for p in family if os.path.exists(f"/proc/{p}") and _live(p)]
    assert not {s for s in shm_segments() if s.startswith(f"gristmill-{job.pid}-")}
    assert not list((out / "shards").glob("*.tmp"))
    again = run(str(images), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr and " 0 already done" not in again.stderr


def _live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
