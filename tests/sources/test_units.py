"""Tars as units: listed without being read, expanded by the worker when their shard runs.

What happens to a tar that goes missing or changes between the listing and its shard, and how
``--retry-errors`` names again what failed: a whole tar by its unit, a sample by the reference its
error row carries. The job runs ``tinynet:gated`` so the test acts while it certainly runs: with
tars of 10, 10 and 8 samples and shards of 8, each tar is a shard; one worker holds the first
shard and the next, and the third tar is expanded only once the first shard is released.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from faultkit import TINY, env, run, start, wait_for
from tinynet import HOLD, held

import gristmill
from gristmill.outdir import reopen
from gristmill.sources import Kind

pytestmark = pytest.mark.slow

JOB = ["--shard-size", "8", "--batch-size", "4", "--workers", "1", "--loaders", "1",
       "--outputs", "output", *TINY, "--model", "tinynet:gated"]


@pytest.fixture()
def tars(wds_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "tars"
    shutil.copytree(wds_dir, folder, ignore=shutil.ignore_patterns("*.txt"))
    return folder


def held_job(tars: Path, out: Path, hold: Path, act) -> subprocess.CompletedProcess:
    """Run the job, do ``act()`` while its worker holds the first shard, then let it finish."""
    hold.touch()
    job = start(str(tars / "shard-{00000..00002}.tar"), "-o", str(out), *JOB,
                extra_env={HOLD: str(hold)})
    try:
        assert wait_for(lambda: held(str(hold)), timeout=120), "the worker never held a batch"
        act()
    finally:
        hold.unlink(missing_ok=True)
    stdout, stderr = job.communicate(timeout=120)
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def test_a_tar_gone_before_its_shard_is_one_error_row_and_retry_errors_reads_it(
        tars, photo_samples, tmp_path):
    third = tars / "shard-00002.tar"
    aside = tmp_path / "aside.tar"
    out = tmp_path / "out"
    done = held_job(tars, out, tmp_path / "hold", lambda: os.replace(third, aside))
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        assert len(result.names) == 20
        assert [(n, s) for n, s, _ in result.errors] == [(str(third), "read")]
    os.replace(aside, third)  # the same file again: same size, same mtime
    again = run(str(tars / "shard-{00000..00002}.tar"), "-o", str(out), *JOB,
                "--retry-errors")
    assert again.returncode == 0, again.stderr
    with gristmill.open(str(out)) as result:
        assert sorted(result.names) == sorted(s["key"] for s in photo_samples)
        assert result.errors == []


def test_a_tar_changed_before_its_shard_stops_the_job_in_one_line(tars, tmp_path):
    third = tars / "shard-00002.tar"
    out = tmp_path / "out"

    def change() -> None:
        with open(third, "ab") as f:
            f.write(b"\0" * 1024)

    done = held_job(tars, out, tmp_path / "hold", change)
    assert done.returncode == 2, done.stderr
    lines = [x for x in done.stderr.splitlines() if "changed since the job listed it" in x]
    assert len(lines) == 1 and str(third) in lines[0], done.stderr
    state = reopen(str(out))
    assert sorted(state.done) == [0, 1]  # committed shards are kept
    again = run(str(tars / "shard-{00000..00002}.tar"), "-o", str(out), *JOB)
    assert again.returncode == 2 and "changed since the job listed it" in again.stderr
    assert sorted(reopen(str(out)).done) == [0, 1]


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_retry_errors_reopens_a_sample_by_its_reference(photo_samples, tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for s in photo_samples[:5]:
            _member(tar, s["key"] + ".jpg", s["jpg"])
    whole = (tmp_path / "a.tar").read_bytes()
    cut = whole.index(photo_samples[4]["jpg"]) + 100  # the last sample is cut short
    (tmp_path / "a.tar").write_bytes(whole[:cut])
    out = tmp_path / "out"
    job = [str(tmp_path / "a.tar"), "-o", str(out), *JOB[:-2]]
    done = run(*job)
    assert done.returncode == 0, done.stderr
    last = photo_samples[4]["key"]
    with gristmill.open(str(out)) as result:
        assert [n for n, _, _ in result.errors] == [last]
    (tmp_path / "a.tar").write_bytes(whole)  # the tar is whole again
    again = run(*job, "--retry-errors")
    assert again.returncode == 0, again.stderr
    state = reopen(str(out))
    retry = state.segments[-1][0]
    assert state.inputs.raw_range(retry, len(state.inputs)) == [last.encode()]
    assert int(state.inputs.kind[retry]) == Kind.TAR  # a sample's byte range, not the tar
    with gristmill.open(str(out)) as result:
        assert sorted(result.names) == sorted(s["key"] for s in photo_samples[:5])
        assert result.errors == []


def test_status_and_report_during_a_tar_job_count_containers_and_items_so_far(tars, tmp_path):
    out = tmp_path / "out"
    seen = {}

    def look() -> None:
        shown = subprocess.run([sys.executable, "-m", "gristmill", "status", str(out), "--json"],
                               env=env(), capture_output=True, text=True, timeout=60)
        seen.update(json.loads(shown.stdout))
        page = subprocess.run([sys.executable, "-m", "gristmill", "report", str(out)],
                              env=env(), capture_output=True, text=True, timeout=60)
        assert page.returncode == 0, page.stderr
        seen["page"] = (out / "report.html").read_text()

    done = held_job(tars, out, tmp_path / "hold", look)
    assert done.returncode == 0, done.stderr
    assert seen["state"] == "running"
    assert (seen["containers"], seen["containers_done"]) == (3, 0)
    assert seen["items_estimated"] is True and seen["items_done"] == 0
    assert seen["bytes"] == sum(p.stat().st_size for p in tars.glob("*.tar"))
    assert "0 of about 28 items done" in seen["page"]
    assert "0 of 3 containers done" in seen["page"]
    final = subprocess.run([sys.executable, "-m", "gristmill", "status", str(out), "--json"],
                           env=env(), capture_output=True, text=True, timeout=60)
    data = json.loads(final.stdout)
    assert (data["containers_done"], data["items"], data["items_estimated"]) == (3, 28, False)
