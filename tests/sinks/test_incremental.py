"""``--append`` and ``--retry-errors``: only the new inputs (or the error rows) get new shards,
committed shards are never touched, and the result equals a fresh run; in every format."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from faultkit import make_images
from jobhelp import cli
from sinkkit import JOB, exactly_once, gristmill

import gristmill as gm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def staging(tmp_path_factory) -> Path:
    """90 photos in f000..f004 (20 a folder, 10 in the last)."""
    root = tmp_path_factory.mktemp("staging")
    make_images(root, 90, per_folder=20)
    return root


def _values(out: Path) -> dict[str, np.ndarray]:
    with gm.open(str(out)) as r:
        return dict(zip(r.names, np.asarray(r["output"][:]), strict=True))


def _names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))


def _run(src: Path, out: Path, fmt: str, *extra: str) -> dict:
    report = out.parent / f"{out.name}-report.json"
    gristmill(str(src), "-o", str(out), "--format", fmt, *JOB, "--report", str(report), *extra)
    return json.loads(report.read_text())


def _seen(src: Path, out: Path, fmt: str, *extra: str) -> tuple[tuple, tuple]:
    """What ``status`` and ``plan`` (of the same command) say: (shards, committed, state) and
    (shards, committed, pending)."""
    s = json.loads(cli("status", str(out), "--json").stdout)
    p = json.loads(cli("plan", str(src), "-o", str(out), "--format", fmt, *JOB, "--json",
                       *extra).stdout)
    return ((s["shards"], s["committed_shards"], s["state"]),
            (p["shards"], p["committed_shards"], p["pending_shards"]))


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) == 0.0


@pytest.mark.parametrize("fmt", ["parquet", "hdf5", "npy"])
def test_append_then_retry_errors(staging, tmp_path, fmt):
    src, out = tmp_path / "photos", tmp_path / "out"
    for folder in ("f000", "f001"):
        shutil.copytree(staging / folder, src / folder)
    (src / "f000" / "broken.jpg").write_bytes(b"not a JPEG yet")
    first = _run(src, out, fmt)
    assert (first["shards"], first["errors"]) == (3, 1)  # 41 inputs in shards of 16
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
              and "shard-" in p.name}

    for folder in ("f002", "f003", "f004"):  # 50 new photos
        shutil.copytree(staging / folder, src / folder)
    grown = _run(src, out, fmt, "--append")
    assert (grown["shards"], grown["shards_skipped"], grown["shards_committed"]) == (7, 3, 4)
    assert grown["ok"] == 50
    # status and plan plan the segments as the run did (the last shard of each is partial)
    assert _seen(src, out, fmt, "--append") == ((7, 7, "complete"), (7, 7, 0))
    assert "broken.jpg" in (out / "report.html").read_text()  # the report of every format
    assert {p: p.stat().st_mtime_ns for p in before} == before  # committed work untouched
    appended = _values(out)
    with gm.open(str(out)) as r:
        exactly_once(r, _names(src))
        assert [e[0] for e in r.errors] == ["f000/broken.jpg"]

    shutil.copyfile(staging / "f004" / "img00080.jpg", src / "f000" / "broken.jpg")
    assert _seen(src, out, fmt, "--retry-errors") == ((7, 7, "complete"), (8, 7, 1))
    retried = _run(src, out, fmt, "--retry-errors")
    assert _seen(src, out, fmt, "--retry-errors") == ((8, 8, "complete"), (8, 8, 0))
    assert (retried["shards"], retried["shards_committed"], retried["ok"]) == (8, 1, 1)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    fixed = tmp_path / "fixed"  # a fresh run over all the photos, the broken one mended
    _run(src, fixed, fmt)
    want = _values(fixed)
    _same(appended, {k: v for k, v in want.items() if k != "f000/broken.jpg"})
    _same(_values(out), want)
    with gm.open(str(out)) as r:
        exactly_once(r, _names(src))
        assert r.errors == [] and r.complete
    assert os.path.exists(out / "segments.json")
    kinds = [s["kind"] for s in json.loads((out / "segments.json").read_text())]
    assert kinds == ["list", "append", "retry"]
