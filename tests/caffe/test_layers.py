"""Every supported layer against a numpy reference of Caffe's semantics, and OpenCV DNN where it
runs the layer the Caffe way. Nets are written with our own schema (V2 here, V1 in test_proto)."""

from __future__ import annotations

import numpy as np
import pytest

from . import npref
from .netkit import layer, run_cv2, run_graph, write_net

R = np.random.RandomState(7)
X = R.randn(2, 4, 9, 11).astype(np.float32)
W33 = R.randn(6, 4, 3, 3).astype(np.float32)
B6 = R.randn(6).astype(np.float32)
C4 = R.randn(4).astype(np.float32)
V4 = R.rand(4).astype(np.float32) + 0.5


def conv_case(params, w, b, **kw):
    lp = layer("out", "Convolution", ["data"], ["out"], f"convolution_param {{ {params} }}",
               [w] + ([b] if b is not None else []))
    return [lp], lambda x: npref.conv2d(x, w, b, **kw)


def pool_case(params, method, k, s, p, x=X):
    lp = layer("out", "Pooling", ["data"], ["out"], f"pooling_param {{ pool: {method} {params} }}")
    return [lp], lambda x: npref.pool(x, method, k, s, p)


def unary(type_, params, ref, blobs=()):
    return [layer("out", type_, ["data"], ["out"], params, list(blobs))], ref


CASES = {
    "conv": conv_case("num_output: 6 kernel_size: 3 pad: 1 stride: 2", W33, B6,
                      stride=(2, 2), pad=(1, 1)),
    "conv_hw_nobias": conv_case("num_output: 6 kernel_h: 3 kernel_w: 3 pad_h: 2 pad_w: 0 "
                                "stride_h: 1 stride_w: 2 bias_term: false", W33, None,
                                stride=(1, 2), pad=(2, 0)),
    "conv_group_dilation": conv_case("num_output: 6 kernel_size: 3 group: 2 dilation: 2 pad: 2",
                                     R.randn(6, 2, 3, 3).astype(np.float32), B6,
                                     pad=(2, 2), dil=(2, 2), group=2),
    "deconv": ([layer("out", "Deconvolution", ["data"], ["out"],
                      "convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 }",
                      [W := R.randn(4, 3, 4, 4).astype(np.float32), Bd := R.randn(3).astype(
                          np.float32)])],
               lambda x: npref.deconv2d(x, W, Bd, (2, 2), (1, 1))),
    "ip": ([layer("out", "InnerProduct", ["data"], ["out"], "inner_product_param { num_output: 5 }",
                  [Wi := R.randn(5, 4 * 9 * 11).astype(np.float32), Bi := R.randn(5).astype(
                      np.float32)])],
           lambda x: x.reshape(2, -1) @ Wi.T + Bi),
    "ip_axis2": ([layer("out", "InnerProduct", ["data"], ["out"],
                        "inner_product_param { num_output: 3 axis: 2 bias_term: false }",
                        [Wa := R.randn(3, 9 * 11).astype(np.float32)])],
                 lambda x: x.reshape(2, 4, -1) @ Wa.T),
    "max_pool_ceil": pool_case("kernel_size: 3 stride: 2", "MAX", (3, 3), (2, 2), (0, 0)),
    "max_pool_pad": pool_case("kernel_size: 3 stride: 2 pad: 1", "MAX", (3, 3), (2, 2), (1, 1)),
    "ave_pool_pad": pool_case("kernel_size: 3 stride: 2 pad: 1", "AVE", (3, 3), (2, 2), (1, 1)),
    "ave_pool_last_window": pool_case("kernel_h: 2 kernel_w: 4 stride: 3 pad: 1", "AVE", (2, 4),
                                      (3, 3), (1, 1)),
    "ave_pool_big_pad": pool_case("kernel_size: 3 stride: 2 pad: 2", "AVE", (3, 3), (2, 2),
                                  (2, 2)),
    "max_pool_big_pad": pool_case("kernel_size: 3 stride: 2 pad: 2", "MAX", (3, 3), (2, 2),
                                  (2, 2)),
    "global_pool": unary("Pooling", "pooling_param { pool: AVE global_pooling: true }",
                         lambda x: x.mean((2, 3), keepdims=True)),
    "lrn_across": unary("LRN", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 }",
                        lambda x: npref.lrn_across(x, 5, 0.3, 0.75, 1)),
    "lrn_across_k2": unary("LRN", "lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 k: 2 }",
                           lambda x: npref.lrn_across(x, 3, 0.3, 0.75, 2)),
    "lrn_within": unary("LRN", "lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 "
                        "norm_region: WITHIN_CHANNEL }",
                        lambda x: npref.lrn_within(x, 3, 0.3, 0.75)),
    "relu": unary("ReLU", "", lambda x: np.maximum(x, 0)),
    "leaky_relu": unary("ReLU", "relu_param { negative_slope: 0.1 }",
                        lambda x: np.where(x > 0, x, 0.1 * x)),
    "prelu": unary("PReLU", "", lambda x: np.where(x > 0, x, C4.reshape(1, 4, 1, 1) * x), [C4]),
    "sigmoid": unary("Sigmoid", "", lambda x: 1 / (1 + np.exp(-x))),
    "tanh": unary("TanH", "", np.tanh),
    "elu": unary("ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x,
                                                                       0.5 * (np.exp(x) - 1))),
    "absval": unary("AbsVal", "", np.abs),
    "power": unary("Power", "power_param { power: 2 scale: 0.5 shift: 3 }",
                   lambda x: (0.5 * x + 3) ** 2),
    "bnll": unary("BNLL", "", lambda x: np.where(x > 0, x + np.log1p(np.exp(-x)),
                                                  np.log1p(np.exp(x)))),
    "dropout": unary("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x),
    "batchnorm": unary("BatchNorm", "batch_norm_param { use_global_stats: true eps: 0.001 }",
                       lambda x: (x - (C4 / 2).reshape(1, 4, 1, 1))
                       / np.sqrt((V4 / 2).reshape(1, 4, 1, 1) + 0.001),
                       [C4, V4, np.array([2.0], np.float32)]),
    "scale_bias": unary("Scale", "scale_param { bias_term: true }",
                        lambda x: x * C4.reshape(1, 4, 1, 1) + V4.reshape(1, 4, 1, 1), [C4, V4]),
    "scale_axis_numaxes": unary("Scale", "scale_param { axis: 2 num_axes: 2 }",
                                lambda x: x * S2, [S2 := R.randn(9, 11).astype(np.float32)]),
    "bias": unary("Bias", "", lambda x: x + C4.reshape(1, 4, 1, 1), [C4]),
    "softmax": unary("Softmax", "", npref.softmax),
    "softmax_axis3": unary("Softmax", "softmax_param { axis: 3 }", lambda x: npref.softmax(x, 3)),
    "flatten": unary("Flatten", "", lambda x: x.reshape(2, -1)),
    "flatten_axes": unary("Flatten", "flatten_param { axis: 2 end_axis: 3 }",
                          lambda x: x.reshape(2, 4, -1)),
    "reshape": unary("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 11 } }",
                     lambda x: x.reshape(2, -1, 11)),
}

# Multi-input layers: tops of earlier layers feed them.
CASES |= {
    "eltwise_sum_coeff": ([layer("a", "Sigmoid", ["data"], ["a"]),
                           layer("out", "Eltwise", ["data", "a"], ["out"],
                                 "eltwise_param { operation: SUM coeff: 2 coeff: -0.5 }")],
                          lambda x: 2 * x - 0.5 / (1 + np.exp(-x))),
    "eltwise_prod": ([layer("a", "TanH", ["data"], ["a"]),
                      layer("out", "Eltwise", ["data", "a"], ["out"],
                            "eltwise_param { operation: PROD }")], lambda x: x * np.tanh(x)),
    "eltwise_max": ([layer("a", "AbsVal", ["data"], ["a"]), layer("b", "Power", ["a"], ["b"],
                                                                   "power_param { scale: -1 }"),
                     layer("out", "Eltwise", ["data", "b"], ["out"],
                           "eltwise_param { operation: MAX }")],
                    lambda x: np.maximum(x, -np.abs(x))),
    "concat": ([layer("a", "TanH", ["data"], ["a"]),
                layer("out", "Concat", ["a", "data"], ["out"])],
               lambda x: np.concatenate([np.tanh(x), x], 1)),
    "slice_concat": ([layer("s", "Slice", ["data"], ["s1", "s2", "s3"],
                            "slice_param { axis: 3 slice_point: 2 slice_point: 7 }"),
                      layer("out", "Concat", ["s3", "s1", "s2"], ["out"],
                            "concat_param { axis: 3 }")],
                     lambda x: np.concatenate([x[..., 7:], x[..., :2], x[..., 2:7]], 3)),
    "split_scale2": ([layer("sp", "Split", ["data"], ["d1", "d2"]),
                      layer("g", "Pooling", ["d2"], ["g"],
                            "pooling_param { pool: AVE global_pooling: true }"),
                      layer("f", "Flatten", ["g"], ["f"]),
                      layer("out", "Scale", ["d1", "f"], ["out"], "scale_param { axis: 0 }")],
                     lambda x: x * x.mean((2, 3), keepdims=True)),
    "crop": ([layer("p", "Pooling", ["data"], ["p"], "pooling_param { pool: MAX kernel_size: 2 "
                    "stride: 2 }"),
              layer("out", "Crop", ["data", "p"], ["out"], "crop_param { axis: 2 offset: 1 "
                    "offset: 2 }")], lambda x: x[:, :, 1:6, 2:8]),
}

# OpenCV's importer does not follow Caffe on these; the numpy reference decides.
CV2_DIFFERS = {
    "lrn_across_k2": "OpenCV's Caffe importer ignores LRN k (always 1); with k 1 they agree",
    "ip_axis2": "OpenCV's InnerProduct flattens from axis 1 regardless of `axis`",
    "lrn_within": "OpenCV uses k in WITHIN_CHANNEL; Caffe's within-channel LRN adds 1, not k",
    "scale_axis_numaxes": "OpenCV's Scale reads multi-axis scale blobs differently",
    "split_scale2": "OpenCV's two-bottom Scale broadcasts a (N, C) scale differently",
    "softmax_axis3": "compared against numpy only (OpenCV output layout for axis 3 varies)",
    "reshape": "compared against numpy only",
    "ave_pool_big_pad": "OpenCV clips AVE windows differently when pad > kernel / 2",
    "max_pool_big_pad": "OpenCV clips pooling windows differently when pad > kernel / 2",
    "ave_pool_last_window": "OpenCV's ceil-mode divisor differs on the overhanging last window",
    "bias": "OpenCV's Bias layer support is partial",
    "eltwise_max": "compared against numpy only",
    "crop": "compared against numpy only",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_caffe_semantics(case, tmp_path):
    layers, ref = CASES[case]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    got = run_graph(proto, model, X, ("out",))["out"]
    want = ref(X.astype(np.float64)).astype(np.float32)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if case in CV2_DIFFERS:
        return
    theirs = run_cv2(proto, model, X, "out")
    np.testing.assert_allclose(got, theirs.reshape(got.shape), rtol=1e-4, atol=1e-4)


def test_inplace_blob_holds_last_inplace_value(tmp_path):
    """pycaffe semantics: `c` names the value after the in-place BN, Scale and ReLU."""
    layers = [layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 6 "
                    "kernel_size: 3 }", [W33, B6]),
              layer("bn", "BatchNorm", ["c"], ["c"], "", [B6, np.abs(B6) + 1, np.ones(1)]),
              layer("sc", "Scale", ["c"], ["c"], "scale_param { bias_term: true }",
                    [np.abs(B6), B6]),
              layer("r", "ReLU", ["c"], ["c"]),
              layer("out", "Pooling", ["c"], ["out"], "pooling_param { pool: MAX kernel_size: 2 }")]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    conv = npref.conv2d(X, W33, B6)
    bn = (conv - B6.reshape(1, -1, 1, 1)) / np.sqrt(np.abs(B6).reshape(1, -1, 1, 1) + 1 + 1e-5)
    want = np.maximum(bn * np.abs(B6).reshape(1, -1, 1, 1) + B6.reshape(1, -1, 1, 1), 0)
    for fold in (False, True):
        got = run_graph(proto, model, X, ("c", "out"), fold=fold)
        np.testing.assert_allclose(got["c"], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["out"], npref.pool(want, "MAX", (2, 2), (1, 1), (0, 0)),
                                   rtol=1e-4, atol=1e-4)


def test_fold_skips_observed_conv_output(tmp_path):
    """A BatchNorm writing a new blob leaves the conv output observable: no fold when requested."""
    from gristmill.caffe.graph import Graph

    layers = [layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 6 "
                    "kernel_size: 3 }", [W33, B6]),
              layer("bn", "BatchNorm", ["c"], ["b"], "", [B6, np.abs(B6) + 1, np.ones(1)])]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    g = Graph.load(proto, model)
    assert g.fold(("c", "b")) == 0
    assert g.fold(("b",)) == 1
    got = run_graph(proto, model, X, ("c", "b"))
    np.testing.assert_allclose(got["c"], npref.conv2d(X, W33, B6), rtol=1e-4, atol=1e-4)


def test_prune_runs_only_what_is_needed(tmp_path):
    from gristmill.caffe.graph import Graph

    layers = [layer("a", "ReLU", ["data"], ["a"]), layer("b", "TanH", ["data"], ["b"]),
              layer("c", "Sigmoid", ["a"], ["c"])]
    proto, model = write_net(tmp_path, layers, shape=X.shape)
    g = Graph.load(proto, model)
    assert [op.layer.name for op in g.plan(("b",))] == ["b"]
    assert [op.layer.name for op in g.plan(("c",))] == ["a", "c"]
    assert g.outputs() == ["b", "c"]


def test_registry_holds_every_layer_type():
    from gristmill.caffe.layers import BUILDERS, SUPPORTED

    core = {"Convolution", "Deconvolution", "InnerProduct", "Pooling", "LRN", "ReLU", "PReLU",
            "Sigmoid", "TanH", "ELU", "AbsVal", "Power", "BNLL", "Dropout", "Split", "BatchNorm",
            "Scale", "Bias", "Eltwise", "Concat", "Slice", "Flatten", "Reshape", "Softmax", "Crop"}
    extra = {"ArgMax", "Threshold", "Exp", "Log", "Tile", "Reduction", "MVN", "Embed", "SPP",
             "Clip", "Swish", "Parameter", "Silence", "DummyData", "Im2col", "BatchReindex"}
    forks = {"Normalize", "Permute", "PriorBox", "DetectionOutput", "Interp", "Upsample",
             "ROIPooling", "ShuffleChannel"}
    assert set(BUILDERS) == core | extra | forks
    assert set(SUPPORTED) == set(BUILDERS) | {"Input", "Python"}


def test_layer_modules_do_not_import_the_registry():
    """Only layers.py (the registry) imports the layer modules; they share layer_base.py."""
    import ast
    import importlib

    for name in ("layer_base", "layers_spatial", "layers_extra", "layers_fork", "detection",
                 "pylayer"):
        module = importlib.import_module(f"gristmill.caffe.{name}")
        with open(module.__file__) as f:
            tree = ast.parse(f.read())
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert "layers" not in imported, name


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("group", [0, 3])
def test_group_must_divide_the_channels(tmp_path, type_, group):
    from gristmill.caffe.graph import Graph
    from gristmill.errors import SpecError

    lp = layer("conv", type_, ["data"], ["out"],
               f"convolution_param {{ num_output: 6 kernel_size: 3 group: {group} }}")
    proto, _ = write_net(tmp_path, [lp], shape=X.shape)
    with pytest.raises(SpecError) as e:
        Graph.load(proto, None)
    assert str(e.value) == (f"layer 'conv' ({type_}): group {group} does not divide 4 input / "
                            "6 output channels")
