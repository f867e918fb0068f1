"""Fixtures for the output-format tests: small real images (one unreadable), and helpers to run
the CLI with the tiny model and to check that every input appears exactly once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reliability"))  # faultkit, tinynet

from faultkit import TINY, make_images, run  # noqa: E402

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1 for this session; its URL."""
    pytest.importorskip("s3fs")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the S3 test server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


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
