"""Tiny Hugging Face snapshots, built once per session (see hf_snapshots.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

KINDS = ("clip", "siglip", "dinov2", "vit")


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from hf_snapshots import build

    root = tmp_path_factory.mktemp("hf")
    return {kind: build(kind, root / kind) for kind in KINDS}
