"""Whole-job fixtures: a photo tree with corrupt files and one reference run, made once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jobhelp import RUN

import gristmill


@pytest.fixture(scope="session")
def job_tree(photo_tree, tmp_path_factory) -> tuple[Path, list[str]]:
    """The 126-photo tree plus a truncated JPEG, a zero-byte file and a text file named .jpg."""
    src, names = photo_tree
    root = tmp_path_factory.mktemp("job") / "photos"
    shutil.copytree(src, root)
    (root / "bad").mkdir()
    data = (root / names[0]).read_bytes()
    (root / "bad/truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "bad/empty.jpg").write_bytes(b"")
    (root / "bad/text.jpg").write_text("not a picture, only words\n")
    return root, names


@pytest.fixture(scope="session")
def reference(job_tree, tmp_path_factory):
    """One undisturbed run of the bundled model over ``job_tree``."""
    root, _ = job_tree
    out = tmp_path_factory.mktemp("ref") / "out"
    report = gristmill.run([str(root)], str(out), **RUN)
    return out, report

