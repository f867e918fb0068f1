"""Killed processes: loaders, workers and the driver itself, with real SIGKILLs.

The jobs run ``tinynet:gated`` with a hold file (see tinynet.py): each worker process runs at most
``FREE`` batches while the file exists, and every process the job can have in that time together
runs fewer batches than the job has, so the job is still running at each kill however busy the
machine; the test deletes the file once its kills are made.
"""

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
from tinynet import FREE, HOLD, held

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "100", "--batch-size", "8", "--workers", "2", "--loaders", "1",
       "--max-attempts", "10", *TINY, "--model", "tinynet:gated"]
BATCHES = 250  # 2 000 images in batches of 8
KILLS = 5
# batches each worker process runs before it holds: 2 workers and at most KILLS replacements,
# 7 x 30 = 210 < BATCHES, so the job cannot finish before the hold is released
RANDOM_FREE = 30


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
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    assert RANDOM_FREE * (2 + KILLS) < BATCHES
    job = start(str(images[0]), "-o", str(out), *JOB,
                extra_env={HOLD: str(hold), FREE: str(RANDOM_FREE)})
    rng = random.Random(5)
    kills: list[tuple[str, int, int]] = []  # kind, pid, its worker
    try:
        # computing has begun (the fork server's warm-up child, no worker, is long gone)
        assert wait_for(lambda: workers_and_loaders(job.pid)[1], timeout=90), "no loader came up"
        for _ in range(KILLS):
            # wait until a worker is up, then kill it or a loader (a held worker restarts a dead
            # loader only once released: with no loader left, a worker is the victim)
            procs = wait_for(lambda: workers_and_loaders(job.pid)[0], timeout=90)
            assert procs, "no worker came up"
            time.sleep(rng.uniform(0.1, 0.6))
            workers, loaders = workers_and_loaders(job.pid)
            victim_kind = rng.choice(["worker", "loader", "loader"]) if loaders else "worker"
            victim = rng.choice(workers if victim_kind == "worker" else loaders)
            parent = victim if victim_kind == "worker" else _parent(victim)
            os.kill(victim, signal.SIGKILL)
            kills.append((victim_kind, victim, parent))
            assert job.poll() is None, "the job ended before all kills were made"
        hold.unlink()
        _, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr
    assert len(kills) == KILLS
    killed_workers = {pid for kind, pid, _ in kills if kind == "worker"}
    for kind, pid, parent in kills:  # each death was seen, by the driver or by its worker
        if kind == "worker":
            assert f"(pid {pid}) died (killed by SIGKILL)" in stderr, stderr
        elif parent not in killed_workers:
            assert f"loader process {pid} died" in stderr, stderr
    assert_same(features(out), reference)
    assert not shm_segments_of(job.pid)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rfind(")") + 2:].split()[1])


def shm_segments_of(pid: int) -> set[str]:
    return {n for n in shm_segments() if n.startswith(f"gristmill-{pid}-")}


def _markers(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (out / "shards").glob("*.json")}


def test_driver_sigkill_then_resume(images, reference, tmp_path):
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    # each worker commits its first two shards (13 batches each, one loader: in order) and then
    # holds: the driver is killed with 4 of 20 shards committed, while both workers compute
    job = start(str(images[0]), "-o", str(out), *JOB, extra_env={HOLD: str(hold), FREE: "26"})
    try:
        assert wait_for(lambda: len(held(str(hold))) == 2, timeout=90), "the workers never held"
        assert len(_markers(out)) == 4 and job.poll() is None
        family = workers_and_loaders(job.pid)
        os.kill(job.pid, signal.SIGKILL)
        job.communicate(timeout=30)
        # the workers are inside a model call that never returns by itself (the hold stays):
        # the fork server exits with the driver and its children with it, whatever they do
        orphans = [p for p in family[0] + family[1] if alive(p)]
        assert wait_for(lambda: not [p for p in orphans if alive(p)], timeout=30), orphans
    finally:
        hold.unlink()
        if job.poll() is None:
            job.kill()
    before = _markers(out)
    assert 4 <= len(before) < 20
    assert wait_for(lambda: not shm_segments_of(job.pid), timeout=10), shm_segments_of(job.pid)
    again = run(str(images[0]), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    after = _markers(out)
    assert len(after) == 20
    kept = {k for k, ino in before.items() if after.get(k) == ino}
    assert kept == set(before), "a committed shard was recomputed"
    assert f"{len(before)} already done" in again.stderr
    assert_same(features(out), reference)
