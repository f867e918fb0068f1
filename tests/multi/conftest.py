"""Fixtures for several models in one pass: lossless photos (so one decode is exactly what each
separate run decodes), an ONNX model with a fixed 96x96 input, the CLI helper."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def png_tree(small_tree, tmp_path_factory) -> tuple[Path, list[str]]:
    """The 28 small-tree photos as PNGs, plus a file that is not an image (an error row)."""
    src, names = small_tree
    root = tmp_path_factory.mktemp("multi-png")
    out = []
    for name in names:
        target = root / Path(name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src / name).convert("RGB").save(target)
        out.append(str(target.relative_to(root)))
    (root / "broken.png").write_bytes(b"not a picture")
    return root, sorted(out)


@pytest.fixture(scope="session")
def onnx_net(tmp_path_factory) -> Path:
    """``models_for_tests.TinyCNN`` as ONNX with a fixed 96x96 input (preset crop 96x96)."""
    import torch
    from models_for_tests import tiny_cnn

    path = tmp_path_factory.mktemp("multi-onnx") / "tiny96.onnx"
    torch.onnx.export(tiny_cnn(), torch.zeros(1, 3, 96, 96), str(path), dynamo=False,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path
