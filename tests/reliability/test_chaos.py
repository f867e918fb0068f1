"""Chaos: random SIGKILLs of any process of a running job (fork server, resource tracker, shm
cleaner, workers, loaders) and SIGSTOP/SIGCONT of a worker, from start-up to the end.

Each round must end as an undisturbed run does: exit 0, the same rows (<= 1e-6), stderr holding
only gristmill's own lines (no traceback, no ``multiprocessing`` warning), no process of the job
alive and nothing of it left in ``/dev/shm`` (see ``chaoskit``: the checks look at this job's
processes and names only, so other jobs running beside it change nothing).

``GRISTMILL_CHAOS_ROUNDS`` (default 2, what CI runs: about 25 s) sets the number of rounds; the bar
is 20 in a row (about 3 minutes on 2 cores)::

    GRISTMILL_CHAOS_ROUNDS=20 python -m pytest -q tests/reliability/test_chaos.py
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from pathlib import Path

import pytest
from chaoskit import Round, chaos_round, features, max_difference, shm_entries, tree, undisturbed
from faultkit import TINY, make_images, start, tagged, wait_for

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("GRISTMILL_CHAOS_ROUNDS", "2"))
JOB = ["--shard-size", "8", "--batch-size", "4", "--workers", "2", "--threads", "1",
       "--loaders", "1", "--max-attempts", "6", "--stall-timeout", "3", *TINY,
       "--model", "tinynet:slow"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chaos-images")
    make_images(root, 160)
    return root


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("chaos-ref") / "out"
    seconds, done = undisturbed([str(images), "-o", str(out), *JOB])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return seconds, features(out)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_chaos_round(images: Path, reference, tmp_path: Path, round_: int) -> None:
    seconds, want = reference
    rng = random.Random(1000 + round_)
    out = tmp_path / "out"
    result = chaos_round([str(images), "-o", str(out), *JOB], duration=seconds, kills=5,
                         stops=1, rng=rng)
    problems = result.problems()
    if problems:  # the whole of it: the assertion's message is cut in the middle
        print(result.stderr)
    assert not problems, (problems, result.kills)
    assert len(result.kills) >= 3, result.kills  # the kills landed while the job ran
    assert max_difference(features(out), want) <= 1e-6


def test_helpers_killed_as_the_job_ends(images: Path, reference, tmp_path: Path) -> None:
    """The fork server, the resource tracker and the shm cleaner SIGKILLed together once the
    last shard is committed (workers stopping, the view being built, the driver exiting): the
    run still ends as an undisturbed one."""
    _, want = reference
    out, tag = tmp_path / "out", uuid.uuid4().hex
    job = start(str(images), "-o", str(out), *JOB, extra_env={"GRISTMILL_TEST_JOB": tag})
    result = Round(driver=job.pid)
    try:
        assert wait_for(lambda: len(list((out / "shards").glob("*.json"))) >= 20 or
                        job.poll() is not None, timeout=120, interval=0.005)
        helpers = tree(job.pid)
        for kind in ("fork server", "resource tracker", "shm cleaner"):
            for pid in helpers[kind]:
                os.kill(pid, signal.SIGKILL)
                result.kills.append((0.0, kind, pid))
        result.stdout, result.stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    result.returncode = job.returncode
    wait_for(lambda: not tagged(tag), timeout=10)
    result.left_alive = tagged(tag)
    wait_for(lambda: not shm_entries(job.pid), timeout=5)
    result.left_shm = shm_entries(job.pid)
    assert result.kills, "the job ended before the helpers could be killed"
    problems = result.problems()
    if problems:
        print(result.stderr)
    assert not problems, (problems, result.kills)
    assert max_difference(features(out), want) <= 1e-6
