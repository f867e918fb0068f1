import dataclasses

import numpy as np
import pytest
from PIL import Image

from gristmill.spec import Preprocess
from gristmill.transforms import ItemError, load_into, resize_crop

PRE = Preprocess(resize=64, crop=(48, 48), mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
                 channel_order="RGB", layout="NCHW")


def save(tmp_path, array, name="x.png"):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return bytes(path)


def reference(array, pre):
    """Resize the shorter side, centre-crop and normalise with plain Pillow + numpy."""
    img = Image.fromarray(array)
    w, h = img.size
    s = pre.resize / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR)
    w, h = img.size
    ch, cw = pre.crop
    left, top = (w - cw) // 2, (h - ch) // 2
    arr = np.asarray(img.crop((left, top, left + cw, top + ch)), np.float32)
    if pre.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    arr = (arr - np.float32(pre.mean)) / np.float32(pre.std)
    return arr.transpose(2, 0, 1) if pre.layout == "NCHW" else arr


@pytest.mark.parametrize("order,layout", [("RGB", "NCHW"), ("BGR", "NHWC")])
def test_load_into_matches_resize_then_crop(tmp_path, order, layout):
    rng = np.random.default_rng(0)
    array = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    array = np.asarray(Image.fromarray(array).resize((120, 90)))  # smooth it a little
    pre = dataclasses.replace(PRE, channel_order=order, layout=layout)
    out = np.empty(pre.item_shape(), np.float32)
    load_into(save(tmp_path, array), out, pre, 10**8)
    # one resampling of the crop box instead of two steps: resampling noise only
    assert np.abs(out - reference(array, pre)).mean() < 0.02
    assert out.shape == pre.item_shape()


def test_channel_order_swaps_red_and_blue(tmp_path):
    array = np.zeros((64, 64, 3), np.uint8)
    array[..., 0] = 255
    out = np.empty((3, 48, 48), np.float32)
    load_into(save(tmp_path, array), out, dataclasses.replace(PRE, channel_order="BGR"), 10**8)
    assert np.allclose(out[2], 1.0) and np.allclose(out[0], -1.0)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    out = np.empty((3, 48, 48), np.float32)
    load_into(save(tmp_path, np.full((64, 64), 200, np.uint8)), out, PRE, 10**8)
    assert np.allclose(out, (200 - 127.5) / 127.5)


@pytest.mark.parametrize("content,stage", [
    (b"", "read"), (b"this is not an image", "decode"), (b"\xff\xd8\xff\xe0garbage", "decode")])
def test_unreadable_inputs_raise_item_errors_with_their_stage(tmp_path, content, stage):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ItemError) as info:
        load_into(bytes(path), np.empty((3, 48, 48), np.float32), PRE, 10**8)
    assert info.value.stage == stage


def test_missing_file_is_a_read_error(tmp_path):
    with pytest.raises(ItemError, match="read: No such file"):
        load_into(bytes(tmp_path / "gone.jpg"), np.empty((3, 48, 48), np.float32), PRE, 10**8)


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = save(tmp_path, np.zeros((100, 100, 3), np.uint8), "big.jpg")
    with pytest.raises(ItemError, match="too large"):
        load_into(path, np.empty((3, 48, 48), np.float32), PRE, 5_000)


def test_crop_larger_than_image_is_zero_padded():
    out = resize_crop(np.full((10, 10, 3), 7, np.uint8),
                      Preprocess(resize=(10, 10), crop=(12, 12)))
    assert out.shape == (12, 12, 3) and out[11, 11, 0] == 0 and out[0, 0, 0] == 7
