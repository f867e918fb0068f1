"""pycaffe's ``caffe.io`` values: gristmill's numpy/torch arithmetic against scikit-image and scipy
themselves, which is what pycaffe calls (references below restate pycaffe's io.py steps)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gristmill.caffe import io as cio

skimage = pytest.importorskip("skimage")
from skimage import color, img_as_float, transform  # noqa: E402
from skimage import io as skio  # noqa: E402

GREY = 0.5 / 255  # half a grey level, on [0, 1] images


def ref_resize(im, dims, order=1):
    """pycaffe's resize_image: [min, max] to [0, 1], skimage resize, back; ndimage.zoom else."""
    from scipy.ndimage import zoom

    if im.shape[-1] in (1, 3):
        lo, hi = im.min(), im.max()
        out = transform.resize((im - lo) / (hi - lo), dims, order=order, mode="constant")
        return (out * (hi - lo) + lo).astype(np.float32)
    scale = tuple(np.array(dims, dtype=float) / np.array(im.shape[:2]))
    return zoom(im, (*scale, 1), order=order).astype(np.float32)


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("io")
    paths = {}
    paths["png"] = folder / "coffee.png"
    Image.fromarray(photos[0]).save(paths["png"])
    paths["jpg"] = folder / "chelsea.jpg"
    Image.fromarray(photos[1]).save(paths["jpg"], quality=90)
    rgba = np.dstack([photos[2], np.linspace(0, 255, photos[2].shape[1], dtype=np.uint8)[None]
                      .repeat(photos[2].shape[0], 0)])
    paths["rgba"] = folder / "astronaut_rgba.png"
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    paths["grey16"] = folder / "grey16.png"
    Image.fromarray(photos[0][..., 1].astype(np.uint16) * 257).save(paths["grey16"])
    return paths


def test_grey_load_equals_rgb2gray(photos, photo_files):
    got = cio.load_image(str(photo_files["png"]), color=False)
    want = color.rgb2gray(photos[0])  # float in [0, 1]
    assert got.shape == (*photos[0].shape[:2], 1) and got.dtype == np.float32
    assert np.abs(got[..., 0] - want).max() <= GREY
    # PIL's own conversion (0.299/0.587/0.114) is what this replaced: it is visibly off
    pil = np.asarray(Image.fromarray(photos[0]).convert("L"), np.float32) / 255
    assert np.abs(pil - want).max() > 2 * GREY


@pytest.mark.parametrize("kind", ["png", "jpg", "rgba", "grey16"])
@pytest.mark.parametrize("colour", [True, False])
def test_load_image_equals_pycaffe(photo_files, kind, colour):
    """pycaffe: img_as_float(imread(f, as_gray=not color)), grey tiled to 3, alpha dropped."""
    want = img_as_float(skio.imread(str(photo_files[kind]), as_gray=not colour)).astype(np.float32)
    if want.ndim == 2:
        want = want[:, :, None]
        if colour:
            want = np.tile(want, (1, 1, 3))
    elif want.shape[2] == 4:
        want = want[:, :, :3]
    got = cio.load_image(str(photo_files[kind]), color=colour)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= GREY


@pytest.mark.parametrize("dims", [(227, 227), (300, 180), (100, 120), (37, 301)])
@pytest.mark.parametrize("channels", [3, 1])
def test_resize_image_equals_pycaffe(photos, dims, channels):
    im = img_as_float(photos[0][::2, ::2]).astype(np.float32)  # 200 x 300
    im = im if channels == 3 else im[..., 1:2]
    im = im * 200 - 60  # pycaffe rescales any range to [0, 1] and back
    got = cio.resize_image(im, dims)
    want = ref_resize(im, dims)
    assert got.shape == want.shape == (*dims, channels)
    assert np.abs(got - want).max() <= GREY * 200


def test_resize_other_channel_counts_use_zoom(photos):
    im = img_as_float(photos[0][::4, ::4, :2]).astype(np.float32)
    for dims in [(80, 90), (200, 300)]:
        np.testing.assert_allclose(cio.resize_image(im, dims), ref_resize(im, dims), atol=1e-5)


def test_constant_image_resizes_to_constant():
    out = cio.resize_image(np.full((5, 7, 3), 0.25, np.float32), (9, 4))
    assert out.shape == (9, 4, 3) and np.all(out == 0.25)


def ref_oversample(images, crop_dims):
    """pycaffe's index arithmetic: corners, the float centre truncated, then all five mirrored."""
    shape, crop = np.array(images[0].shape), np.array(crop_dims)
    ix = np.empty((5, 4), dtype=int)
    for n, (i, j) in enumerate([(0, 0), (0, shape[1] - crop[1]), (shape[0] - crop[0], 0),
                                (shape[0] - crop[0], shape[1] - crop[1])]):
        ix[n] = (i, j, i + crop[0], j + crop[1])
    ix[4] = np.tile(shape[:2] / 2.0, (1, 2)) + np.concatenate([-crop / 2.0, crop / 2.0])
    out = []
    for im in images:
        five = [im[a:c, b:d] for a, b, c, d in ix]
        out += five + [f[:, ::-1] for f in five]
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("crop", [(227, 227), (224, 200), (101, 99)])
def test_oversample_equals_pycaffe(photos, crop):
    ims = [img_as_float(p[:255, :255]).astype(np.float32) for p in photos[:2]]
    got = cio.oversample(ims, crop)
    assert got.shape == (20, *crop, 3)
    np.testing.assert_array_equal(got, ref_oversample(ims, crop))


def test_transformer_preprocess_deprocess_equal_pycaffe(photos):
    im = img_as_float(photos[1]).astype(np.float32)
    mean = np.array([104.0, 117.0, 123.0])
    t = cio.Transformer({"data": (1, 3, 227, 227)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    got = t.preprocess("data", im)
    want = ref_resize(im, (227, 227)).transpose(2, 0, 1)[[2, 1, 0]] * 255
    want = (want - mean[:, None, None]) * 0.5
    assert got.shape == (3, 227, 227) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 0.5 * 0.5  # half a grey level after input_scale 0.5
    back = t.deprocess("data", got[None])
    np.testing.assert_allclose(back, ref_resize(im, (227, 227)), atol=1e-5)
