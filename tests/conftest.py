"""Shared fixtures: real photos written once per session; the bundled model loaded once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from photos import make_tree
from s3server import s3_server  # noqa: F401  (one S3 server for the whole session)


@pytest.fixture(scope="session", autouse=True)
def kept_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's own folder of kept model descriptions (``models.memo``), shared by every
    job the tests run, in this process and the ones they start; never the user's cache."""
    folder = tmp_path_factory.mktemp("kept-models")
    os.environ["GRISTMILL_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def photo_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """126 real photos in nested folders with repeated basenames, and their relative names."""
    root = tmp_path_factory.mktemp("photos")
    return root, make_tree(root)


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """28 real photos (2 folders): for tests that run whole jobs several times."""
    root = tmp_path_factory.mktemp("small")
    return root, make_tree(root, folders=2)


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 with its ImageNet weights, loaded once."""
    from gristmill.models.efficientnet import efficientnet_lite0

    return efficientnet_lite0()
