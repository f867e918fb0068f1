"""Object storage: loose files, tars and tables in a real S3-compatible server on 127.0.0.1.

Runs against the server must equal the local runs name for name; a missing object is an error row;
a driver killed with SIGKILL resumes from the objects without listing them again; no credential
ever reaches OUT.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faultkit import make_images, run, start, wait_for
from srckit import JOB, assert_same_features, by_name, columns_by_name

import gristmill

pytestmark = pytest.mark.slow
BUCKET = "gristmill-test"


@pytest.fixture(scope="session")
def s3(s3_server, small_tree, wds_dir, parquet_dir):
    """The photos, the tars and the tables uploaded; yields the s3fs filesystem."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a cached client may point at another endpoint
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    root, _ = small_tree
    fs.put(str(root) + "/", f"{BUCKET}/photos/", recursive=True)
    fs.put(str(wds_dir) + "/", f"{BUCKET}/wds/", recursive=True)
    fs.put(str(parquet_dir) + "/", f"{BUCKET}/tables/", recursive=True)
    fs.pipe(f"{BUCKET}/lists/two.txt", b"../photos/g0/coffee.jpg\n../photos/g0/gone.jpg\n")
    return fs


def _no_secret(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert b"testing-secret" not in path.read_bytes(), path


@pytest.mark.parametrize("source, extra, strip", [
    ("s3://gristmill-test/photos", (), ".jpg"),
    ("s3://gristmill-test/wds/shard-{00000..00002}.tar", ("--keep-columns", "caption,width"), ""),
    ("s3://gristmill-test/tables/bytes/*.parquet", ("--keep-columns", "caption,width"), ""),
    ("s3://gristmill-test/tables/paths.parquet", ("--path-column", "path"), ""),
])
def test_runs_from_s3_equal_local_runs(s3, loose_run, photo_samples, tmp_path, source, extra,
                                       strip):
    out = tmp_path / "out"
    done = run(source, "-o", str(out), *JOB, *extra)
    assert done.returncode == 0, done.stderr
    got = by_name(out, strip)
    assert sorted(got) == sorted(loose_run)
    if not strip:
        assert_same_features(out, loose_run)
    else:
        for name, value in got.items():
            assert abs(value - loose_run[name]).max() <= 1e-6, name
    if "--keep-columns" in extra:
        expected = {s["key"]: s for s in photo_samples}
        for name, cols in columns_by_name(out).items():
            assert cols["caption"] == expected[name]["caption"]
            assert int(cols["width"]) == expected[name]["width"]
    _no_secret(out)


def test_a_missing_object_is_an_error_row(s3, tmp_path):
    out = tmp_path / "out"
    done = run("s3://gristmill-test/lists/two.txt", "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        assert result.names == ["coffee.jpg"]  # named from the entries' common folder
        [(name, stage, message)] = result.errors
    assert (name, stage) == ("gone.jpg", "read") and "gone.jpg" in message


def test_driver_sigkill_resumes_from_s3(s3, tmp_path):
    import webdataset as wds

    images = tmp_path / "images"
    names = make_images(images, 240, size=48)
    with wds.ShardWriter(str(tmp_path / "t-%03d.tar"), maxcount=60, verbose=0) as sink:
        for name in names:
            sink.write({"__key__": name[:-4], "jpg": (images / name).read_bytes()})
    s3.put(str(tmp_path) + "/t-*.tar", f"{BUCKET}/kill/")
    slow = [*JOB, "--model", "tinynet:slow", "--batch-size", "2", "--shard-size", "10"]
    reference = tmp_path / "local"
    assert run(str(tmp_path / "t-*.tar"), "-o", str(reference), *slow).returncode == 0
    out = tmp_path / "out"
    source = "s3://gristmill-test/kill/t-{000..003}.tar"
    job = start(source, "-o", str(out), *slow)
    try:
        markers = lambda: list((out / "shards").glob("*.json"))  # noqa: E731
        assert wait_for(lambda: len(markers()) >= 3, timeout=120), "no shard committed"
        os.kill(job.pid, signal.SIGKILL)
        job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    before = len(markers())
    assert 3 <= before < 24
    listed = (out / "inputs.npz").stat().st_mtime_ns
    again = run(source, "-o", str(out), *slow)
    assert again.returncode == 0, again.stderr
    assert (out / "inputs.npz").stat().st_mtime_ns == listed  # resumed from the frozen list
    assert f"{before} already done" in again.stderr
    expected = by_name(reference)
    got = by_name(out)
    assert sorted(got) == sorted(expected) and len(got) == 240
    for name, value in got.items():
        assert abs(value - expected[name]).max() <= 1e-6, name
    _no_secret(out)
