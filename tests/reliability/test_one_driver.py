"""Two ``gristmill run`` on one OUT: the second is refused at once; a SIGKILLed first blocks
nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faultkit import TINY, descendants, make_images, run, start, wait_for
from jobhelp import alive

from gristmill import ledger

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "40", "--batch-size", "8", "--workers", "1", "--loaders", "1",
       *TINY, "--model", "tinynet:slow"]


def test_second_driver_is_refused_and_a_killed_one_blocks_nothing(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_images(images, 400)
    out = tmp_path / "out"
    first = start(str(images), "-o", str(out), *JOB)
    try:
        assert wait_for(lambda: list((out / "shards").glob("*.json")), timeout=90)
        second = run(str(images), "-o", str(out), *JOB, timeout=60)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and "in use by another gristmill run" in lines[0]
        assert first.poll() is None  # the refused run touched nothing of the first
        family = descendants(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert ledger.holder(str(out)) is None
    again = run(str(images), "-o", str(out), *JOB, timeout=180)
    assert again.returncode == 0, again.stderr
    assert " 0 already done" not in again.stderr
    assert wait_for(lambda: not [p for p in family if alive(p)], timeout=10)
