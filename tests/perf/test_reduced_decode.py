"""Reduced-size JPEG decode stays close to a full decode followed by the same resize and crop.

Tolerance (0..255 units, over the preprocessed 224x224 crop): mean absolute difference per photo
under 1.5 on average over the sample photos and under 3 for the worst photo. Measured on this set:
average 0.9 / worst 2.2 at 1920x1080 (1/4 scale), average 0.4 / worst 0.9 at 1000x750 (1/2).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
from photos import sample_photos
from PIL import Image

from gristmill.models.torch import IMAGENET_PRESET
from gristmill.transforms import decode, resize_crop


def _jpeg(image: np.ndarray, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG",
                                                                      quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return list(sample_photos().values())


@pytest.mark.parametrize("size", [(1920, 1080), (1000, 750), (500, 375), (375, 500)])
def test_reduced_decode_matches_full_decode_within_tolerance(
        size: tuple[int, int], photos: list[np.ndarray]) -> None:
    pre = IMAGENET_PRESET.complete()
    diffs = []
    for image in photos:
        data = _jpeg(image, size)
        reduced = decode(data, pre, 1 << 30)
        assert min(reduced.shape[:2]) >= 256  # never below the resize target
        full = simplejpeg.decode_jpeg(data, colorspace="RGB")
        a = resize_crop(reduced, pre).astype(np.float32)
        b = resize_crop(full, pre).astype(np.float32)
        diffs.append(float(np.abs(a - b).mean()))
    assert np.mean(diffs) < 1.5, diffs
    assert max(diffs) < 3.0, diffs


def test_large_photos_are_decoded_reduced(photos: list[np.ndarray]) -> None:
    data = _jpeg(photos[0], (1920, 1080))
    assert decode(data, IMAGENET_PRESET.complete(), 1 << 30).shape == (270, 480, 3)
