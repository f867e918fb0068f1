"""Two ``gristmill run`` on one OUT: the second is refused at once; a SIGKILLed first blocks
nothing. The first runs ``tinynet:gated``, held after its first shard (see tinynet.py), so it is
certainly still running while the second one starts, is refused, and the first is killed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faultkit import TINY, descendants, make_images, run, start, wait_for
from jobhelp import alive
from tinynet import FREE, HOLD, held

from gristmill import ledger

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "40", "--batch-size", "8", "--workers", "1", "--loaders", "1",
       *TINY, "--model", "tinynet:gated"]


def test_second_driver_is_refused_and_a_killed_one_blocks_nothing(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_images(images, 400)
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    first = start(str(images), "-o", str(out), *JOB, extra_env={HOLD: str(hold), FREE: "5"})
    try:
        assert wait_for(lambda: held(str(hold)), timeout=90), "the first run never held"
        assert list((out / "shards").glob("*.json"))
        second = run(str(images), "-o", str(out), *JOB, timeout=60)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and "in use by another gristmill run" in lines[0]
        assert first.poll() is None  # the refused run touched nothing of the first
        family = descendants(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        # released at once: a worker inside a model call sees its driver gone only when the call
        # returns (its fork server outlives the driver while any worker holds the server's alive
        # pipe, which Python hands every forked child), as a worker between batches would
        hold.unlink()
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert ledger.holder(str(out)) is None
    again = run(str(images), "-o", str(out), *JOB, timeout=180)
    assert again.returncode == 0, again.stderr
    assert " 0 already done" not in again.stderr
    assert wait_for(lambda: not [p for p in family if alive(p)], timeout=30)
