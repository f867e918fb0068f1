"""Chaos: random SIGKILLs of any process of a running job (fork server, resource tracker, shm
cleaner, workers, loaders) and SIGSTOP/SIGCONT of a worker, from start-up to the end.

Each round must end as an undisturbed run does: exit 0, the same rows (<= 1e-6), stderr holding
only gristmill's own lines (no traceback, no ``multiprocessing`` warning), no process of the job
alive and nothing of it left in ``/dev/shm``. ``GRISTMILL_CHAOS_ROUNDS`` (default 2) sets the
number of rounds; the issue's bar is 20 in a row.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from chaoskit import chaos_round, features, max_difference, undisturbed
from faultkit import TINY, make_images

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
    assert not result.problems(), (result.problems(), result.kills, result.stderr)
    assert len(result.kills) >= 3, result.kills  # the kills landed while the job ran
    assert max_difference(features(out), want) <= 1e-6
