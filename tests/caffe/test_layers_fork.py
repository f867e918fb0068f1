"""Fork layers (SSD, DeepLab, SegNet, Faster R-CNN, ShuffleNet) against OpenCV DNN, which runs
SSD and DeepLab nets, and against numpy of the reference implementations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from . import npref
from .netkit import layer, random_weights, run_cv2, run_graph, write_net

NETS = Path(__file__).parent / "nets"
R = np.random.RandomState(5)
X = R.randn(2, 6, 9, 11).astype(np.float32)
SCALE = (R.rand(6) + 0.5).astype(np.float32)


def single(type_, params, blobs=(), bottoms=("data",), pre=()):
    return [*pre, layer("out", type_, list(bottoms), ["out"], params, list(blobs))]


def normalize_ref(x, across, scale):
    axes = (1, 2, 3) if across else (1,)
    return x / np.sqrt((x ** 2).sum(axes, keepdims=True) + 1e-10) * scale.reshape(1, -1, 1, 1)


CASES = {
    "normalize": (single("Normalize", "norm_param { across_spatial: false channel_shared: false }",
                         [SCALE]), lambda x: normalize_ref(x, False, SCALE)),
    "normalize_across_shared": (single("Normalize", "norm_param { across_spatial: true "
                                       "channel_shared: true }", [np.array([3.0], np.float32)]),
                                lambda x: normalize_ref(x, True, np.full(6, 3.0))),
    "permute": (single("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
                lambda x: x.transpose(0, 2, 3, 1)),
    "permute_partial": (single("Permute", "permute_param { order: 0 order: 3 }"),
                        lambda x: x.transpose(0, 3, 1, 2)),
    "shuffle_channel": (single("ShuffleChannel", "shuffle_channel_param { group: 3 }"),
                        lambda x: x.reshape(2, 3, 2, 9, 11).transpose(0, 2, 1, 3, 4)
                        .reshape(x.shape)),
    "interp_zoom": (single("Interp", "interp_param { zoom_factor: 3 }"), None),
    "interp_shrink": (single("Interp", "interp_param { shrink_factor: 2 }"), None),
    "interp_size": (single("Interp", "interp_param { height: 20 width: 7 }"), None),
    "interp_crop_zoom": (single("Interp", "interp_param { zoom_factor: 2 pad_beg: -1 "
                                "pad_end: -2 }"), None),
    "priorbox": (single("PriorBox", "prior_box_param { min_size: 4 max_size: 9 aspect_ratio: 2 "
                        "aspect_ratio: 3 flip: true clip: true variance: 0.1 variance: 0.1 "
                        "variance: 0.2 variance: 0.2 step: 3 offset: 0.5 }",
                        bottoms=("p", "data"), pre=[layer("p", "Pooling", ["data"], ["p"],
                                                          "pooling_param { pool: MAX "
                                                          "kernel_size: 2 stride: 2 }")]), None),
    "priorbox_no_max_one_variance": (single("PriorBox", "prior_box_param { min_size: 5 "
                                            "aspect_ratio: 2 flip: false clip: false "
                                            "variance: 0.1 }",
                                            bottoms=("data", "data")), None),
}


def bilinear_aligned(x, oh, ow):
    """Bilinear with corners aligned (DeepLab's caffe_cpu_interp2)."""
    h, w = x.shape[2:]
    ys = np.arange(oh) * ((h - 1) / (oh - 1) if oh > 1 else 0)
    xs = np.arange(ow) * ((w - 1) / (ow - 1) if ow > 1 else 0)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    dy, dx = (ys - y0)[:, None], (xs - x0)[None]
    a, b = x[:, :, y0][:, :, :, x0], x[:, :, y0][:, :, :, x1]
    c, d = x[:, :, y1][:, :, :, x0], x[:, :, y1][:, :, :, x1]
    return (1 - dy) * ((1 - dx) * a + dx * b) + dy * ((1 - dx) * c + dx * d)


NUMPY_INTERP = {
    "interp_zoom": lambda x: bilinear_aligned(x, 9 + 8 * 2, 11 + 10 * 2),
    "interp_shrink": lambda x: bilinear_aligned(x, 5, 6),
    "interp_size": lambda x: bilinear_aligned(x, 20, 7),
    "interp_crop_zoom": lambda x: bilinear_aligned(x[:, :, 1:-2, 1:-2], 11, 15),
}
# OpenCV's Interp ignores pad_beg / pad_end and fails on shrink_factor alone; its Permute needs
# the full order; its PriorBox clips unless told `clip: false` (SSD's default is false).
CV2_DIFFERS = {"interp_crop_zoom", "interp_shrink", "permute_partial"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fork_layer(case, tmp_path):
    layers, ref = CASES[case]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    got = run_graph(proto, model, X, ("out",))["out"]
    ref = ref or NUMPY_INTERP.get(case)
    if ref is not None:
        want = ref(X.astype(np.float64)).astype(np.float32)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if case not in CV2_DIFFERS:
        theirs = run_cv2(proto, model, X, "out")
        np.testing.assert_allclose(got, theirs.reshape(got.shape), rtol=1e-4, atol=1e-5)


def test_priorbox_by_hand(tmp_path):
    """One 1x1 cell of a 10x10 image: min 4, max 9, ratio 2 (+ flipped 1/2), SSD's order."""
    proto, model = write_net(tmp_path, [
        layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX global_pooling: true }"),
        layer("out", "PriorBox", ["p", "data"], ["out"], "prior_box_param { min_size: 4 "
              "max_size: 9 aspect_ratio: 2 flip: true }")], shape=(1, 1, 10, 10))
    got = run_graph(proto, model, np.zeros((1, 1, 10, 10), np.float32), ("out",))["out"]
    c, s2 = 5.0, math.sqrt(2)
    sizes = [(4, 4), (6, 6), (4 * s2, 4 / s2), (4 / s2, 4 * s2)]
    want = [[(c - w / 2) / 10, (c - h / 2) / 10, (c + w / 2) / 10, (c + h / 2) / 10]
            for w, h in sizes]
    np.testing.assert_allclose(got[0, 0], np.ravel(want), rtol=1e-6)
    np.testing.assert_allclose(got[0, 1], 0.1)


def test_pooling_mask_and_upsample(tmp_path):
    """SegNet: MAX pooling's mask top, then Upsample scatters the maxima back to their place."""
    x = R.randn(2, 3, 8, 10).astype(np.float32)
    proto, model = write_net(tmp_path, [
        layer("pool", "Pooling", ["data"], ["pool", "mask"],
              "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        layer("out", "Upsample", ["pool", "mask"], ["out"], "upsample_param { scale: 2 }")],
        shape=x.shape)
    got = run_graph(proto, model, x, ("pool", "mask", "out"))
    windows = x.reshape(2, 3, 4, 2, 5, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 5, 4)
    arg = windows.argmax(-1)
    rows = np.arange(4)[:, None] * 2 + arg // 2
    cols = np.arange(5)[None] * 2 + arg % 2
    np.testing.assert_array_equal(got["mask"], rows * 10 + cols)
    np.testing.assert_allclose(got["pool"], npref.pool(x, "MAX", (2, 2), (2, 2), (0, 0)))
    want = np.where(x == np.repeat(np.repeat(got["pool"], 2, 2), 2, 3), x, 0)
    np.testing.assert_allclose(got["out"], want)


def roi_pool_ref(x, rois, ph, pw, scale):
    out = np.zeros((len(rois), x.shape[1], ph, pw), np.float32)
    h, w = x.shape[2:]
    for r, (b, *corners) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.floor(v * scale + 0.5)) for v in corners)
        bh, bw = max(y2 - y1 + 1, 1) / ph, max(x2 - x1 + 1, 1) / pw
        for i in range(ph):
            for j in range(pw):
                hs = int(np.clip(np.floor(i * bh) + y1, 0, h))
                he = int(np.clip(np.ceil((i + 1) * bh) + y1, 0, h))
                ws = int(np.clip(np.floor(j * bw) + x1, 0, w))
                we = int(np.clip(np.ceil((j + 1) * bw) + x1, 0, w))
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max((1, 2))
    return out


def test_roi_pooling(tmp_path):
    rois = np.array([[0, 0, 0, 15, 11], [1, 4, 2, 9, 30], [1, 30, 30, 40, 40], [0, 3, 3, 3, 3]],
                    np.float32)
    proto, model = write_net(tmp_path, [
        layer("rois", "Parameter", [], ["rois"], "parameter_param { shape { dim: 4 dim: 5 } }",
              [rois]),
        layer("out", "ROIPooling", ["data", "rois"], ["out"],
              "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }")],
        shape=X.shape)
    got = run_graph(proto, model, X, ("out",))["out"]
    np.testing.assert_allclose(got, roi_pool_ref(X, rois, 3, 2, 0.5))
    assert np.all(got[2] == 0)  # entirely outside the feature map: empty bins are 0


def test_ssd_net_matches_opencv(tmp_path):
    proto = str(NETS / "ssd_mini.prototxt")
    model = random_weights(proto, str(tmp_path / "ssd.caffemodel"), seed=3)
    x = np.random.RandomState(1).uniform(-100, 100, (2, 3, 64, 64)).astype(np.float32)
    got = run_graph(proto, model, x, ("detection_out", "mbox_priorbox", "conv4_3_norm"))
    import cv2

    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.setInput(x)
    dets, priors, norm = net.forward(["detection_out", "mbox_priorbox", "conv4_3_norm"])
    np.testing.assert_allclose(got["conv4_3_norm"], norm, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["mbox_priorbox"], priors, rtol=1e-5, atol=1e-6)
    ours, theirs = got["detection_out"].reshape(-1, 7), dets.reshape(-1, 7)
    assert 10 < len(ours) <= 2 * 200
    assert ours.shape == theirs.shape
    # same detections; OpenCV orders equal-label rows by its own sort, so compare as sets
    key = np.lexsort
    ours, theirs = ours[key(ours.T[::-1])], theirs[key(theirs.T[::-1])]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_deeplab_net_matches_opencv(tmp_path):
    proto = str(NETS / "deeplab_mini.prototxt")
    model = random_weights(proto, str(tmp_path / "deeplab.caffemodel"), seed=4)
    x = np.random.RandomState(2).uniform(-100, 100, (1, 3, 65, 65)).astype(np.float32)
    got = run_graph(proto, model, x, ("fc8_interp", "fc8_argmax"))
    import cv2

    # OpenCV has no ArgMax layer: it gets the net without it
    text = Path(proto).read_text()
    cut = tmp_path / "no_argmax.prototxt"
    cut.write_text(text[:text.index('layer { name: "fc8_argmax"')])
    net = cv2.dnn.readNetFromCaffe(str(cut), model)
    net.setInput(x)
    theirs = net.forward("fc8_interp")
    np.testing.assert_allclose(got["fc8_interp"], theirs, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(got["fc8_argmax"][:, 0], got["fc8_interp"].argmax(1))
