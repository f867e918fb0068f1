"""Session fixtures for ``ray`` tests: a real 3-node Ray cluster (see cluster.py) and 210 photos."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

WORKER_NODES = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A head node and two one-CPU worker nodes; tests call ``ensure_workers()`` first."""
    pytest.importorskip("ray")
    from cluster import local_cluster

    with local_cluster(WORKER_NODES) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tree210(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """210 real photos (15 folders) in nested folders."""
    from photos import make_tree

    root = tmp_path_factory.mktemp("photos210")
    return root, make_tree(root, folders=15)
