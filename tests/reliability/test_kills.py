"""Killed processes: loaders, workers and the driver itself, with real SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from faultkit import TINY, make_images, run, shm_segments, start, wait_for, workers_and_loaders
from jobhelp import alive

pytestmark = pytest.mark.slow

# tinynet:slow (50 ms a batch) keeps the job alive through five kills and their restarts
JOB = ["--shard-size", "100", "--batch-size", "8", "--workers", "2", "--loaders", "1",
       "--max-attempts", "10", *TINY, "--model", "tinynet:slow"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("kill-images")
    return root, make_images(root, 2000)


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("kill-ref") / "out"
    done = run(str(images[0]), "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    return features(out)


def features(out: Path) -> dict[str, np.ndarray]:
    with h5py.File(out / "features.h5", "r") as f:
        names = [n.decode() for n in f["names"][()]]
        assert len(names) == len(set(names)), "an input appears twice"
        assert len(f["errors"]) == 0
        return dict(zip(names, f["output"][()], strict=True))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert diff <= 1e-6, diff


def test_random_kills_of_loaders_and_workers(images, reference, tmp_path):
    out = tmp_path / "out"
    job = start(str(images[0]), "-o", str(out), *JOB)
    rng = random.Random(5)
    kills = []
    try:
        for _ in range(5):
            # wait until some worker has its loaders up (it is computing), then kill one
            procs = wait_for(lambda: _some(job.pid), timeout=90)
            assert procs, "workers and loaders never came up"
            time.sleep(rng.uniform(0.1, 0.6))
            procs = _some(job.pid) or procs
            victim_kind = rng.choice(["worker", "loader", "loader"])
            victim = rng.choice(procs[0] if victim_kind == "worker" else procs[1])
            os.kill(victim, signal.SIGKILL)
            kills.append((victim_kind, victim))
            assert job.poll() is None, "the job ended before all kills were made"
        _, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr
    assert len(kills) == 5
    assert stderr.count("died") >= 5, stderr
    assert_same(features(out), reference)
    assert not shm_segments_of(job.pid)


def _some(driver: int) -> tuple[list[int], list[int]] | None:
    workers, loaders = workers_and_loaders(driver)
    return (workers, loaders) if workers and loaders else None


def shm_segments_of(pid: int) -> set[str]:
    return {n for n in shm_segments() if n.startswith(f"gristmill-{pid}-")}


def _markers(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (out / "shards").glob("*.json")}


def test_driver_sigkill_then_resume(images, reference, tmp_path):
    out = tmp_path / "out"
    job = start(str(images[0]), "-o", str(out), *JOB)
    try:
        assert wait_for(lambda: len(_markers(out)) >= 4, timeout=90), "no shard committed"
        family = workers_and_loaders(job.pid)
        os.kill(job.pid, signal.SIGKILL)
        job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    before = _markers(out)
    assert 4 <= len(before) < 20
    orphans = [p for p in family[0] + family[1] if alive(p)]
    assert wait_for(lambda: not [p for p in orphans if alive(p)], timeout=5), orphans
    assert wait_for(lambda: not shm_segments_of(job.pid), timeout=10), shm_segments_of(job.pid)
    again = run(str(images[0]), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    after = _markers(out)
    assert len(after) == 20
    kept = {k for k, ino in before.items() if after.get(k) == ino}
    assert kept == set(before), "a committed shard was recomputed"
    assert f"{len(before)} already done" in again.stderr
    assert_same(features(out), reference)
