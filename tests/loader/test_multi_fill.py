"""One decode, several preprocessings (``loader.multi``): each segment of a row equals what a
single-model loader writes for that preprocessing from the same pixels, and the reduced JPEG decode
covers the largest target."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gristmill.loader.multi import fill_row, layout, row_length
from gristmill.spec import Preprocess
from gristmill.transforms import ItemError, decode, decode_into

BIG = Preprocess(resize=256, crop=(224, 224), mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0),
                 channel_order="RGB", layout="NCHW", resample="bilinear")
SMALL = Preprocess(resize=(40, 50), crop=(32, 48), mean=(0.0,) * 3, std=(1.0,) * 3,
                   channel_order="BGR", layout="NHWC", resample="bicubic")


def encoded(fmt: str, size: tuple[int, int] = (900, 600)) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (size[1] // 30, size[0] // 30, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_layout_shares_a_segment_between_equal_preprocessings() -> None:
    segments = layout([BIG, SMALL, BIG])
    assert [s.preprocess for s in segments] == [BIG, SMALL]
    assert [s.offset for s in segments] == [0, 3 * 224 * 224]
    assert segments[1].shape == (32, 48, 3)
    assert row_length(segments) == 3 * 224 * 224 + 32 * 48 * 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_each_segment_equals_its_own_preprocessing(fmt) -> None:
    data = encoded(fmt)
    segments = layout([BIG, SMALL])
    rows = np.full((2, row_length(segments)), np.nan, np.float32)
    fill_row(data, rows[1], segments, 10**8)
    for s in segments:
        alone = np.empty(s.shape, np.float32)
        if fmt == "PNG":  # lossless: every single-model loader decodes the same pixels
            decode_into(data, alone, s.preprocess, 10**8)
        else:  # JPEG: the one reduced decode covers the largest target
            from gristmill.transforms import normalize_into, resize_crop

            rgb = decode(data, [BIG, SMALL], 10**8)
            normalize_into(resize_crop(rgb, s.preprocess), alone, s.preprocess)
        np.testing.assert_array_equal(s.view(rows)[1], alone)
    assert np.isnan(rows[0]).all()


def test_reduced_decode_covers_the_largest_target() -> None:
    data = encoded("JPEG", (1800, 1200))
    assert decode(data, SMALL, 10**8).shape[:2] == (150, 225)  # 1/8 covers 40x50
    assert decode(data, [SMALL, BIG], 10**8).shape[:2] == (300, 450)  # 1/4 covers 256 short side


def test_unreadable_item_is_an_item_error() -> None:
    row = np.empty(row_length(layout([BIG, SMALL])), np.float32)
    with pytest.raises(ItemError) as caught:
        fill_row(b"not an image", row, layout([BIG, SMALL]), 10**8)
    assert caught.value.stage == "decode"
