"""Output faults: a read-only OUT and a full output disk give one clear error, keep committed
shards, leave no marker for a partial shard, and the same command completes once fixed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import pytest
from faultkit import TINY, drop_file_override, make_images, run

pytestmark = pytest.mark.slow

# 100 images in shards of 80 and 20: shard files of about 10 KB and 7 KB
JOB = ["--shard-size", "80", "--batch-size", "8", "--workers", "1", "--loaders", "1",
       "--max-attempts", "2", *TINY]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("out-images")
    make_images(root, 100)
    return root


def _state(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (out / "shards").iterdir()}


def _complete(out: Path) -> None:
    with h5py.File(out / "features.h5", "r") as f:
        assert len(f["names"]) == 100 and f.attrs["complete"]


def test_read_only_output(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    done = run(str(images), "-o", str(out), *JOB, preexec_fn=drop_file_override)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"gristmill: error: output folder {out} is not writable"]
    out.chmod(0o755)
    again = run(str(images), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    _complete(out)


@pytest.fixture
def small_disk(tmp_path):
    """A 28 KB tmpfs: room for job.json, the input list and the first shard, not for more."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=28k,mode=755", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_output_disk_then_resume(images, small_disk):
    out = small_disk / "out"
    done = run(str(images), "-o", str(out), *JOB)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gristmill: failed:") and "No space left" in last, done.stderr
    state = _state(out)
    markers = {n for n in state if n.endswith(".json")}
    assert {n for n in state if n.endswith(".h5")} == {m[:-5] + ".h5" for m in markers}, state
    assert not [n for n in state if n.endswith(".tmp")], state
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    again = run(str(images), "-o", str(out), *JOB)
    assert again.returncode == 0, again.stderr
    assert f"{len(markers)} already done" in again.stderr
    after = _state(out)
    assert all(after[m] == state[m] for m in markers), "a committed shard was rewritten"
    _complete(out)
