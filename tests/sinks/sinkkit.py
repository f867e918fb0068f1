"""Fixtures for the output-format tests: small real images (one unreadable), and helpers to run
the CLI with the tiny model and to check that every input appears exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reliability"))  # faultkit, tinynet

from faultkit import TINY, make_images, run  # noqa: E402
from s3server import free_port  # noqa: E402

JOB = ["--shard-size", "16", "--batch-size", "8", "--workers", "1", "--loaders", "1", *TINY]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """40 small JPEGs and one file that is not an image (an error row)."""
    root = tmp_path_factory.mktemp("fmt-images")
    names = make_images(root, 40, per_folder=20)
    (root / "f000" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root, sorted([*names, os.path.join("f000", "broken.jpg")])


def gristmill(*args: str, timeout: float = 180):
    done = run(*args, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def exactly_once(result, names: list[str]) -> None:
    """Every input in the outputs or in errors, once; rows aligned with names."""
    ok = list(result.names)
    bad = [row[0] for row in result.errors]
    assert len(ok) == len(set(ok)), "an input has two output rows"
    assert len(bad) == len(set(bad)), "an input has two error rows"
    assert not set(ok) & set(bad), "an input is in the outputs and in errors"
    assert sorted(ok + bad) == sorted(names)
    for key, data in result.outputs.items():
        assert len(data) == len(ok), key


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: dict[str, str]) -> str:
    """The URL of the tests' S3-compatible server (``s3server.py``)."""
    pytest.importorskip("s3fs")
    return s3_server["AWS_ENDPOINT_URL"]


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, request) -> str:
    """A fresh bucket on the test server; the environment points S3 clients (ours, the CLI's
    subprocesses) at it, with throwaway credentials."""
    import s3fs

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    name = "b" + request.node.name.lower().replace("_", "-")[:40].strip("-[]") + "-" + str(
        free_port())
    s3fs.S3FileSystem().mkdir(name)
    return name


def wait_then_kill(job: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL the driver ``job`` as soon as ``ready()`` is true (its workers die with it)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert job.poll() is None, f"the job ended before it could be killed: {job.stderr.read()}"
        assert time.monotonic() < deadline, "the job never reached the point to kill it"
        time.sleep(0.02)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate(timeout=60)
