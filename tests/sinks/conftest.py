"""Fixtures for the output-format tests: small real images (one unreadable), and helpers to run
the CLI with the tiny model and to check that every input appears exactly once."""

from __future__ import annotations

import os
import sys
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
