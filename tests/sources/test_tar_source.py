"""webdataset tar shards: listing from headers, keys as names, kept columns, bad tars."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from faultkit import env, run
from srckit import JOB, assert_same_features, by_name, columns_by_name

import gristmill
from gristmill.plan import pack, plan
from gristmill.sources import Kind, entry_of, expand, list_inputs, tars
from gristmill.sources.tars import expand_braces


def cli_inspect(out) -> list[str]:
    return [sys.executable, "-m", "gristmill", "inspect", str(out)]


def test_brace_ranges_expand_like_webdataset():
    assert expand_braces("d/{008..011}.tar") == [f"d/{i:03d}.tar" for i in range(8, 12)]
    assert expand_braces("{a,b}/{0..1}.tar") == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]


def test_listing_reads_no_tar_but_the_first_tars_headers(wds_dir, photo_samples, monkeypatch):
    read: list[tuple[str, int]] = []
    real = os.pread
    monkeypatch.setattr(tars.os, "pread", lambda fd, n, pos: read.append(
        (os.readlink(f"/proc/self/fd/{fd}"), n)) or real(fd, n, pos))
    inputs = list_inputs([str(wds_dir / "shard-{00000..00002}.tar")])
    # one unit per tar, named after it, weighing its samples as estimated from its size
    assert inputs.raw_range(0, len(inputs)) == [
        str(wds_dir / f"shard-{i:05d}.tar").encode() for i in range(3)]
    assert set(inputs.kind.tolist()) == {Kind.TAR_FILE}
    assert inputs.weights().tolist() == [10, 10, 8]
    assert [s.split(":")[0] for s in inputs.stamps] == [
        str((wds_dir / f"shard-{i:05d}.tar").stat().st_size) for i in range(3)]
    assert {path for path, _ in read} == {str(wds_dir / "shard-00000.tar")}  # the estimate
    assert max(n for _, n in read) <= 512  # header blocks and pax records only
    # the worker's expansion: keys in tar order, each sample's byte range, headers only
    read.clear()
    items = expand(inputs, 0, 3, "")
    assert [n.decode() for n in items.names] == [s["key"] for s in photo_samples]
    assert {r.kind for r in items.refs} == {Kind.TAR}
    assert max(n for _, n in read) <= 512
    assert sum(n for _, n in read) < sum(len(s["jpg"]) for s in photo_samples) / 10
    assert [entry_of(items, i) for i in (0, 9, 10, 27)] == [0, 0, 1, 2]
    # the same tars as a folder, a glob and a list file give the same list
    listing = wds_dir / "tars.txt"
    listing.write_text("".join(f"shard-{i:05d}.tar\n" for i in range(3)))
    for source in (str(wds_dir), str(wds_dir / "*.tar"), str(listing)):
        other = list_inputs([source])
        assert other.raw_range(0, len(other)) == inputs.raw_range(0, len(inputs))


def test_shards_keep_to_tar_boundaries():
    assert [(s.start, s.stop) for s in plan(28, 8, [10, 20])] == [
        (0, 8), (8, 10), (10, 18), (18, 20), (20, 28)]
    # small tars are packed whole
    assert [(s.start, s.stop) for s in plan(12, 8, [3, 6, 9])] == [(0, 6), (6, 12)]
    assert [(s.start, s.stop) for s in plan(20, 8)] == [(0, 8), (8, 16), (16, 20)]


def test_units_pack_by_weight_and_are_never_cut():
    weights = np.array([3, 3, 3, 20, 2, 9, 1])
    shards = pack(weights, 8, breaks=list(range(1, 7)))
    assert [(s.start, s.stop, s.items) for s in shards] == [
        (0, 2, 6), (2, 3, 3), (3, 4, 20), (4, 5, 2), (5, 6, 9), (6, 7, 1)]
    # weights of one are the item plan, cut for cut
    for n, breaks in ((28, [10, 20]), (12, [3, 6, 9]), (20, [])):
        assert [(s.start, s.stop) for s in pack(np.ones(n, dtype=np.int64), 8, breaks)] == [
            (s.start, s.stop) for s in plan(n, 8, breaks)]


def test_a_key_in_two_tars_is_reported_with_both_and_every_copy_kept(wds_dir, tmp_path):
    shutil.copy(wds_dir / "shard-00000.tar", tmp_path / "a.tar")
    shutil.copy(wds_dir / "shard-00000.tar", tmp_path / "b.tar")
    out = tmp_path / "out"
    done = run(str(tmp_path / "{a,b}.tar"), "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        assert len(result.names) == 20 and len(set(result.names)) == 10
    shown = subprocess.run(cli_inspect(out), env=env(), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"10 key\(s\) occur more than once \(20 rows; first: 'g0/astronaut', 2x, "
                     r"in .*a\.tar and .*b\.tar\)", shown.stdout), shown.stdout
    page = (out / "report.html").read_text()
    assert 'id="duplicates"' in page and "b.tar" in page


@pytest.mark.slow
def test_tar_run_equals_loose_files_with_keys_and_kept_columns(wds_dir, photo_samples,
                                                                 loose_run, tmp_path):
    out = tmp_path / "out"
    done = run(str(wds_dir / "shard-{00000..00002}.tar"), "-o", str(out), *JOB,
               "--keep-columns", "caption,url,width,txt,cls")
    assert done.returncode == 0, done.stderr
    assert_same_features(out, loose_run)
    expected = {s["key"]: s for s in photo_samples}
    for name, cols in columns_by_name(out).items():
        s = expected[name]
        assert (cols["caption"], cols["url"], cols["txt"]) == (s["caption"], s["url"],
                                                               s["caption"])
        assert (int(cols["width"]), int(cols["cls"])) == (s["width"], s["cls"])


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_bad_tars_give_error_rows(photo_samples, tmp_path):
    good = photo_samples[:4]
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for s in good:
            _member(tar, s["key"] + ".jpg", s["jpg"])
        _member(tar, "textonly.txt", b"no image here")
        _member(tar, "notimage.jpg", b"words, not a picture")
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        for s in photo_samples[4:7]:
            _member(tar, s["key"] + ".jpg", s["jpg"])
    data = (tmp_path / "b.tar").read_bytes()
    cut = data.index(photo_samples[6]["jpg"]) + 100  # the last image is cut short
    (tmp_path / "b.tar").write_bytes(data[:cut])
    out = tmp_path / "out"
    done = run(str(tmp_path / "*.tar"), "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    import gristmill

    with gristmill.open(str(out)) as result:
        errors = {name: (stage, message) for name, stage, message in result.errors}
        assert sorted(result.names) == sorted(s["key"] for s in photo_samples[:6])
    assert errors["textonly"][1].startswith("sample has no image member (has txt)")
    assert errors["notimage"][0] == "decode"
    assert "truncated tar" in errors[photo_samples[6]["key"]][1]
    assert len(by_name(out)) == 6
