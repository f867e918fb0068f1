"""Local workers are forks of a server that imported torch once: they share those pages.

Measured through /proc while a real job runs (no timing): a spawned worker would hold its own copy
of torch's heap, a forked one shares it with the server and its sibling workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from reliability.faultkit import (
    TINY,
    children,
    make_images,
    start,
    wait_for,
    workers_and_loaders,
)
from reliability.tinynet import HOLD, held

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "100", "--batch-size", "8", "--workers", "2", "--loaders", "1",
       *TINY, "--model", "tinynet:gated"]


def shared_anonymous_mb(pid: int) -> float:
    """Anonymous memory of ``pid`` that other processes map too (pages inherited by fork)."""
    total, anon, shared = 0, 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "Anonymous":
                anon = int(rest.split()[0])
            elif key in ("Shared_Clean", "Shared_Dirty"):
                shared += int(rest.split()[0])
            elif key == "VmFlags":  # the last field of a mapping
                total += min(anon, shared)
                anon = shared = 0
    return total / 1024


def test_workers_are_forks_of_a_server_with_torch_imported(tmp_path: Path) -> None:
    root = tmp_path / "images"
    make_images(root, 600)
    hold = tmp_path / "hold"
    hold.touch()
    # both workers hold their first batch (tinynet.py) until the test has looked at them
    job = start(str(root), "-o", str(tmp_path / "out"), *JOB, extra_env={HOLD: str(hold)})
    try:
        assert wait_for(lambda: len(held(str(hold))) == 2, timeout=90), "two workers never held"
        workers, loaders = workers_and_loaders(job.pid)
        assert sorted(workers) == sorted(held(str(hold))) and loaders
        servers = {int(open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[1])
                   for w in workers}
        assert len(servers) == 1 and servers <= set(children(job.pid))
        for pid in workers:
            assert shared_anonymous_mb(pid) > 50, f"worker {pid} shares no imported pages"
        hold.unlink()
        _, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr
    assert not [p for p in os.listdir("/proc") if p.isdigit() and int(p) in workers]
