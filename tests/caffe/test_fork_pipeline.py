"""An SSD-style and a DeepLab-style deploy net (the published layer sets and parameters, our own
small random weights) end to end through `gristmill run`, checked against the graph run directly
on the same preprocessed images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jobhelp import cli

import gristmill
from gristmill.spec import Preprocess
from gristmill.transforms import load_into

from .netkit import random_weights

pytestmark = pytest.mark.slow
NETS = Path(__file__).parent / "nets"
MEAN = (104.0, 117.0, 123.0)


def _direct(proto, model, root, names, picks, size, outputs):
    from gristmill.caffe.graph import Graph

    pre = Preprocess(resize=(size, size), mean=MEAN, std=(1.0, 1.0, 1.0), channel_order="BGR",
                     layout="NCHW")
    batch = np.empty((len(picks), 3, size, size), np.float32)
    for row, i in enumerate(picks):
        load_into(bytes(root / names[i]), batch[row], pre, 10**8)
    g = Graph.load(proto, model)
    with torch.inference_mode():
        out = g.run({"data": torch.from_numpy(batch)}, outputs)
    return {k: v.numpy() for k, v in out.items()}


def _run(tmp_path, root, proto, model, outputs, size):
    out = tmp_path / Path(proto).stem
    done = cli("run", str(root), "-o", str(out), "--model", proto, "--weights", model,
               "--outputs", outputs, "--resize", f"{size}x{size}", "--mean",
               ",".join(str(m) for m in MEAN), "--batch-size", "4", "--shard-size", "8",
               "--workers", "2")
    assert done.returncode == 0, done.stderr
    return out


def test_ssd_style_net_through_gristmill_run(tmp_path, small_tree):
    root, names = small_tree
    proto = str(NETS / "ssd_mini.prototxt")
    model = random_weights(proto, str(tmp_path / "ssd.caffemodel"), seed=3, scale=0.05)
    out = _run(tmp_path, root, proto, model, "detection_out,mbox_conf_flatten", 64)
    with gristmill.open(str(out)) as result:
        assert result.names == names
        dets = result["detection_out"][()]
        conf = result["mbox_conf_flatten"][()]
    assert dets.shape == (len(names), 200, 7)
    picks = [0, 5, 17]
    want = _direct(proto, model, root, names, picks, 64, ("detection_out", "mbox_conf_flatten"))
    np.testing.assert_allclose(conf[picks], want["mbox_conf_flatten"], atol=1e-5)
    rows = want["detection_out"].reshape(-1, 7)
    for row, i in enumerate(picks):
        mine = rows[rows[:, 0] == row]
        assert len(mine) > 0
        got = dets[i][dets[i][:, 1] >= 0]
        assert len(got) == min(len(mine), 200)
        np.testing.assert_allclose(got[:, 1:], mine[:200, 1:], rtol=1e-4, atol=1e-5)
        assert np.all(dets[i][len(got):] == -1)


def test_deeplab_style_net_through_gristmill_run(tmp_path, small_tree):
    root, names = small_tree
    proto = str(NETS / "deeplab_mini.prototxt")
    model = random_weights(proto, str(tmp_path / "deeplab.caffemodel"), seed=4, scale=0.05)
    out = _run(tmp_path, root, proto, model, "fc8_argmax,fc8_interp", 65)
    with gristmill.open(str(out)) as result:
        assert result.names == names
        labels, scores = result["fc8_argmax"][()], result["fc8_interp"][()]
    assert labels.shape == (len(names), 1, 65, 65) and scores.shape == (len(names), 21, 65, 65)
    picks = [2, 20]
    want = _direct(proto, model, root, names, picks, 65, ("fc8_argmax", "fc8_interp"))
    np.testing.assert_allclose(scores[picks], want["fc8_interp"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(labels[picks], want["fc8_argmax"])
    assert len(np.unique(labels)) > 1  # a real segmentation map, not one class everywhere


def test_refuses_outputs_that_are_not_per_image(tmp_path, small_tree):
    root, _ = small_tree
    proto = str(NETS / "ssd_mini.prototxt")
    model = random_weights(proto, str(tmp_path / "ssd.caffemodel"))
    done = cli("run", str(root), "-o", str(tmp_path / "o"), "--model", proto, "--weights", model,
               "--outputs", "mbox_priorbox", "--resize", "64x64", "--workers", "1")
    assert done.returncode != 0
    assert "mbox_priorbox" in done.stderr and "not one row per image" in done.stderr
