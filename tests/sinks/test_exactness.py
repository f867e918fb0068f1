"""Every input exactly once (in the outputs or in errors) after a run, an append and a retry,
each killed (SIGKILL of the driver) and resumed; the result equals a fresh run. npy format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from faultkit import make_images, start
from sinkkit import TINY, exactly_once, gristmill, wait_then_kill

import gristmill as gm

pytestmark = pytest.mark.slow

SLOW = ["--format", "npy", "--shard-size", "8", "--batch-size", "8", "--workers", "1",
        "--loaders", "1", "--threads", "1", *TINY, "--model", "tinynet:slow"]


def _markers(out: Path) -> int:
    return len(list((out / "shards").glob("shard-*.json"))) if out.exists() else 0


def _segments(out: Path) -> list[str]:
    try:
        return [s["kind"] for s in json.loads((out / "segments.json").read_text())]
    except (OSError, ValueError):
        return []


def _values(out: Path) -> dict[str, np.ndarray]:
    with gm.open(str(out)) as r:
        return dict(zip(r.names, r["output"], strict=True))


def test_runs_appends_retries_killed_and_resumed(tmp_path):
    staging, src, out = tmp_path / "staging", tmp_path / "photos", tmp_path / "out"
    make_images(staging, 160, per_folder=40)
    for folder in ("f000", "f001", "f002"):
        shutil.copytree(staging / folder, src / folder)
    (src / "f000" / "broken.jpg").write_bytes(b"not yet a JPEG")
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*.jpg"))

    # 1. the first run, killed after two shards, resumed by the same command
    wait_then_kill(start(str(src), "-o", str(out), *SLOW), lambda: _markers(out) >= 2)
    assert _markers(out) < 16
    gristmill(str(src), "-o", str(out), *SLOW)
    with gm.open(str(out)) as r:
        exactly_once(r, names)

    # 2. 40 photos added; the append killed once one new shard is committed, then resumed
    shutil.copytree(staging / "f003", src / "f003")
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*.jpg"))
    wait_then_kill(start(str(src), "-o", str(out), *SLOW, "--append"),
                   lambda: _markers(out) >= 17)
    assert _markers(out) < 21 and _segments(out) == ["list", "append"]
    with gm.open(str(out)) as r:  # half an append: still each input at most once
        assert len(set(r.names)) == len(r.names)
    gristmill(str(src), "-o", str(out), *SLOW, "--append")
    with gm.open(str(out)) as r:
        exactly_once(r, names)
        assert [e[0] for e in r.errors] == ["f000/broken.jpg"]

    # 3. the broken file mended; the retry killed as soon as its segment exists, then resumed
    shutil.copyfile(staging / "f003" / "img00150.jpg", src / "f000" / "broken.jpg")
    wait_then_kill(start(str(src), "-o", str(out), *SLOW, "--retry-errors"),
                   lambda: _segments(out) == ["list", "append", "retry"])
    gristmill(str(src), "-o", str(out), *SLOW, "--retry-errors")
    gristmill(str(src), "-o", str(out), *SLOW, "--retry-errors", "--append")  # nothing to do
    assert _segments(out) == ["list", "append", "retry"]
    with gm.open(str(out)) as r:
        exactly_once(r, names)
        assert r.errors == [] and r.complete

    fresh = tmp_path / "fresh"
    gristmill(str(src), "-o", str(fresh), *SLOW)
    got, want = _values(out), _values(fresh)
    assert sorted(got) == sorted(want) == names
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) == 0.0
