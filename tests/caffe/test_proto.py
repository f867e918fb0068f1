"""Reading files: the three deploy input styles, legacy V1 nets, mean files, and every one-line
error a user can cause."""

from __future__ import annotations

import numpy as np
import pytest

from gristmill.caffe import caffe_pb2 as pb
from gristmill.errors import SpecError

from . import npref
from .netkit import layer, run_cv2, run_graph, write_net

R = np.random.RandomState(3)
X = R.randn(2, 3, 8, 8).astype(np.float32)
W = R.randn(4, 3, 3, 3).astype(np.float32)
B = R.randn(4).astype(np.float32)


def small(tmp_path, style="layer"):
    layers = [layer("conv", "Convolution", ["data"], ["conv"],
                    "convolution_param { num_output: 4 kernel_size: 3 }", [W, B]),
              layer("relu", "ReLU", ["conv"], ["conv"]),
              layer("prob", "Softmax", ["conv"], ["prob"])]
    return write_net(tmp_path, layers, shape=X.shape, style=style)


@pytest.mark.parametrize("style", ["layer", "input_dim", "input_shape"])
def test_input_styles(tmp_path, style):
    proto, model = small(tmp_path, style)
    got = run_graph(proto, model, X, ("prob", "conv"))
    conv = np.maximum(npref.conv2d(X, W, B), 0)
    np.testing.assert_allclose(got["conv"], conv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["prob"], npref.softmax(conv), rtol=1e-5, atol=1e-6)


V1_PROTOTXT = """name: "v1net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "norm1" type: LRN bottom: "conv1" top: "norm1"
  lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layers { name: "pool1" type: POOLING bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc"
  inner_product_param { num_output: 5 } }
layers { name: "drop" type: DROPOUT bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def _legacy_blob(v1: pb.V1LayerParameter, array: np.ndarray) -> None:
    """A blob with the legacy num/channels/height/width shape, as VGG-era files store it."""
    shape = (1,) * (4 - array.ndim) + array.shape
    v1.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3],
                 data=array.ravel().tolist())


def test_v1_net_text_and_binary(tmp_path):
    from google.protobuf import text_format

    net = text_format.Parse(V1_PROTOTXT, pb.NetParameter())
    wfc = R.randn(5, 4 * 4 * 4).astype(np.float32)
    bfc = R.randn(5).astype(np.float32)
    _legacy_blob(net.layers[0], W.astype(np.float32)[:4])
    _legacy_blob(net.layers[0], B)
    _legacy_blob(net.layers[4], wfc)
    _legacy_blob(net.layers[4], bfc)
    (tmp_path / "v1.prototxt").write_text(V1_PROTOTXT)
    (tmp_path / "v1.caffemodel").write_bytes(net.SerializeToString())
    proto, model = str(tmp_path / "v1.prototxt"), str(tmp_path / "v1.caffemodel")
    got = run_graph(proto, model, X, ("prob", "pool1"))
    conv = np.maximum(npref.conv2d(X, W, B, pad=(1, 1)), 0)
    pool = npref.pool(npref.lrn_across(conv, 3, 1e-4, 0.75, 1), "MAX", (3, 3), (2, 2), (0, 0))
    np.testing.assert_allclose(got["pool1"], pool, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["prob"], npref.softmax(pool.reshape(2, -1) @ wfc.T + bfc),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["prob"], run_cv2(proto, model, X, "prob"), rtol=1e-4, atol=1e-6)


def test_mean_file(tmp_path):
    from gristmill.caffe.proto import channel_mean, read_mean

    mean = R.rand(3, 5, 6).astype(np.float32) * 255
    blob = pb.BlobProto(num=1, channels=3, height=5, width=6, data=mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    np.testing.assert_allclose(read_mean(str(tmp_path / "mean.binaryproto")), mean, rtol=1e-6)
    np.testing.assert_allclose(channel_mean(str(tmp_path / "mean.binaryproto")),
                               mean.reshape(3, -1).mean(1), rtol=1e-5)


def test_train_phase_layers_are_dropped(tmp_path):
    proto, model = small(tmp_path)
    text = open(proto).read() + ('layer { name: "acc" type: "Accuracy" bottom: "prob" '
                                 'bottom: "label" top: "acc" include { phase: TRAIN } }\n')
    open(proto, "w").write(text)
    assert "prob" in run_graph(proto, model, X, ("prob",))


# ---- one-line errors -------------------------------------------------------------------------
def _load(proto, model):
    from gristmill.caffe.graph import Graph

    return Graph.load(proto, model)


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_files(tmp_path):
    proto, model = small(tmp_path)
    with pytest.raises(SpecError) as e:
        _load(str(tmp_path / "nope.prototxt"), model)
    assert "does not exist" in _one_line(e)
    with pytest.raises(SpecError) as e:
        _load(proto, str(tmp_path / "nope.caffemodel"))
    assert "nope.caffemodel does not exist" in _one_line(e)


def test_truncated_caffemodel(tmp_path):
    proto, model = small(tmp_path)
    data = open(model, "rb").read()
    open(model, "wb").write(data[: len(data) // 2])
    with pytest.raises(SpecError) as e:
        _load(proto, model)
    assert "truncated" in _one_line(e)


def test_prototxt_parse_error_names_line(tmp_path):
    proto, model = small(tmp_path)
    lines = open(proto).read().splitlines()
    lines.insert(3, "  bogus_field { : }")
    open(proto, "w").write("\n".join(lines))
    with pytest.raises(SpecError) as e:
        _load(proto, model)
    assert "does not parse" in _one_line(e) and "4:" in _one_line(e)


def test_shape_mismatch_names_layer(tmp_path):
    layers = [layer("conv", "Convolution", ["data"], ["conv"],
                    "convolution_param { num_output: 4 kernel_size: 3 }", [W[:, :, :2], B])]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    with pytest.raises(SpecError) as e:
        _load(proto, model)
    assert "'conv'" in _one_line(e) and "(4, 3, 3, 3)" in _one_line(e)


def test_missing_weights_for_layer(tmp_path):
    proto, _model = small(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, empty = write_net(other, [layer("x", "ReLU", ["data"], ["x"])], shape=X.shape)
    with pytest.raises(SpecError) as e:
        _load(proto, empty)
    assert "'conv'" in _one_line(e) and "0 blobs" in _one_line(e)


def test_unsupported_layer(tmp_path):
    layers = [layer("weird", "PSROIPooling", ["data"], ["out"])]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    with pytest.raises(SpecError) as e:
        _load(proto, model)
    message = _one_line(e)
    assert "'weird'" in message and "'PSROIPooling'" in message and "Convolution" in message


def test_size_limits(tmp_path, monkeypatch):
    from gristmill.caffe import proto as reader

    proto, _model = small(tmp_path)
    monkeypatch.setattr(reader, "MAX_PROTOTXT_BYTES", 10)
    with pytest.raises(SpecError) as e:
        reader.read_prototxt(proto)
    assert "limit" in _one_line(e)


def test_backend_errors(tmp_path):
    from gristmill.models import caffe as backend
    from gristmill.spec import ModelSpec

    proto, model = small(tmp_path)
    with pytest.raises(SpecError) as e:
        backend.describe(ModelSpec(ref=proto))
    assert "--weights" in _one_line(e)
    with pytest.raises(SpecError):
        backend.describe(ModelSpec(ref=proto, weights=str(tmp_path / "missing.caffemodel")))
    info = backend.describe(ModelSpec(ref=proto, weights=model))
    assert info.default_outputs == ("prob",) and info.preset.resize == (8, 8)
    m = backend.create(ModelSpec(ref=proto, weights=model), outputs=("nope",), device="cpu",
                       threads=1)
    with pytest.raises(SpecError) as e:
        m.setup()
    assert "'nope'" in _one_line(e)


def test_generated_schema_loads_on_this_runtime():
    import google.protobuf

    major, minor = (int(v) for v in google.protobuf.__version__.split(".")[:2])
    assert (major, minor) >= (5, 29)
    assert pb.LayerParameter.DESCRIPTOR.fields_by_name["convolution_param"].number == 106
