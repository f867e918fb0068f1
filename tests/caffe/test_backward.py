"""``Net.backward``: diffs against central finite differences in float64, Caffe's rules for which
diffs exist (force_backward, loss_weight, propagate_down), in-place blobs and Python layers.

Tolerance: the net runs backward in float32 (unit roundoff 6e-8) over sums of at most a few
hundred terms, so its gradients carry relative errors of ~1e-5; the reference is a central
difference of the same graph run in float64 (step 1e-6: truncation ~1e-12, roundoff ~1e-10).
"""

from __future__ import annotations

import logging
import sys
import textwrap

import numpy as np
import pytest
import torch

from .netkit import USER_LAYERS as MODULE
from .netkit import layer, write_net

SHAPE = (2, 3, 8, 8)


def _main_layers(rng: np.random.RandomState, ip_extra: str = "") -> list:
    """conv -> ReLU in place -> MAX pool -> conv -> BatchNorm, Scale, ReLU in place -> AVE pool
    -> InnerProduct -> Softmax."""
    return [
        layer("conv1", "Convolution", ["data"], ["conv1"],
              "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }",
              [rng.randn(4, 3, 3, 3) * 0.3, rng.randn(4) * 0.1]),
        layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        layer("pool1", "Pooling", ["conv1"], ["pool1"],
              "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        layer("conv2", "Convolution", ["pool1"], ["conv2"],
              "convolution_param { num_output: 6 kernel_size: 3 pad: 1 }",
              [rng.randn(6, 4, 3, 3) * 0.3, rng.randn(6) * 0.1]),
        layer("bn2", "BatchNorm", ["conv2"], ["conv2"], "",
              [rng.randn(6) * 0.1, rng.uniform(0.5, 1.5, 6), np.ones(1)]),
        layer("scale2", "Scale", ["conv2"], ["conv2"], "scale_param { bias_term: true }",
              [rng.randn(6) * 0.5 + 1, rng.randn(6) * 0.1]),
        layer("relu2", "ReLU", ["conv2"], ["conv2"]),
        layer("pool2", "Pooling", ["conv2"], ["pool2"],
              "pooling_param { pool: AVE kernel_size: 2 stride: 2 }"),
        layer("ip", "InnerProduct", ["pool2"], ["ip"], "inner_product_param { num_output: 5 } "
              + ip_extra, [rng.randn(5, 24) * 0.3, rng.randn(5) * 0.1]),
        layer("prob", "Softmax", ["ip"], ["prob"]),
    ]


def _write(folder, layers, *, force: bool, name: str = "net") -> tuple[str, str]:
    proto, model = write_net(folder, layers, shape=SHAPE, name=name)
    if force:
        with open(proto) as f:
            text = f.read()
        with open(proto, "w") as f:
            f.write("force_backward: true\n" + text)
    return proto, model


def _net(proto: str, model: str, x: np.ndarray):
    import gristmill.caffe as caffe

    net = caffe.Net(proto, model, caffe.TEST)
    net.blobs["data"].data[...] = x
    net.forward()
    return net


class Reference:
    """The same net in float64: the objective sum_k <blob_k, seed_k> and its central differences."""

    def __init__(self, proto: str, model: str, x: np.ndarray, seeds: dict[str, np.ndarray]):
        from gristmill.caffe.graph import Graph

        self.graph = Graph.load(proto, model)
        for op in self.graph.ops:
            op.layer.params = [p.double() for p in op.layer.params]
        self.x = torch.from_numpy(x.astype(np.float64))
        self.seeds = {k: torch.from_numpy(np.asarray(s, np.float64)) for k, s in seeds.items()}

    def value(self) -> float:
        with torch.no_grad():
            out = self.graph.run({"data": self.x}, tuple(self.seeds))
        return sum(float((out[k] * s).sum()) for k, s in self.seeds.items())

    def _central(self, flat: torch.Tensor, i: int, h: float = 1e-6) -> float:
        old = float(flat[i])
        flat[i] = old + h
        up = self.value()
        flat[i] = old - h
        down = self.value()
        flat[i] = old
        return (up - down) / (2 * h)

    def input_grad(self, i: int) -> float:
        return self._central(self.x.view(-1), i)

    def param_grad(self, layer_name: str, k: int, i: int) -> float:
        op = next(o for o in self.graph.ops if o.layer.name == layer_name)
        return self._central(op.layer.params[k].view(-1), i)


def _close(got: float, want: float, whole: np.ndarray, what: str) -> None:
    atol = 1e-5 * (1.0 + float(np.abs(whole).max()))
    assert abs(got - want) <= 2e-3 * abs(want) + atol, f"{what}: backward {got}, FD {want}"


def _check(ref: Reference, net, rng, *, data: bool, params: list[str], n: int = 3) -> None:
    if data:
        diff = net.blobs["data"].diff
        for i in rng.choice(diff.size, n, replace=False):
            _close(float(diff.ravel()[i]), ref.input_grad(int(i)), diff, f"data[{i}]")
    for name in params:
        for k, blob in enumerate(net.params[name]):
            for i in rng.choice(blob.count, min(n, blob.count), replace=False):
                _close(float(blob.diff.ravel()[i]), ref.param_grad(name, k, int(i)), blob.diff,
                       f"{name}[{k}][{i}]")


TRAINED = ["conv1", "conv2", "scale2", "ip"]


def test_diffs_match_finite_differences(tmp_path):
    rng = np.random.RandomState(0)
    proto, model = _write(tmp_path, _main_layers(rng), force=True)
    x = rng.randn(*SHAPE).astype(np.float32)
    seed = rng.randn(2, 5).astype(np.float32)
    net = _net(proto, model, x)
    net.blobs["prob"].diff[...] = seed
    out = net.backward()
    assert set(out) == {"data"} and out["data"] is net.blobs["data"].diff
    for name, blob in net.blobs.items():
        assert blob.diff.shape == blob.data.shape == blob.shape, name
        assert blob.diff.dtype == np.float32
    assert np.abs(out["data"]).max() > 0
    _check(Reference(proto, model, x, {"prob": seed}), net, rng, data=True, params=TRAINED)
    # Caffe's BatchNorm never computes diffs of its statistics
    assert all(not b.diff.any() for b in net.params["bn2"])


def test_in_place_blob_diff_is_the_gradient_entering_the_chain(tmp_path):
    rng = np.random.RandomState(1)
    proto, model = _write(tmp_path, _main_layers(rng), force=True)
    net = _net(proto, model, rng.randn(*SHAPE).astype(np.float32))
    net.backward(prob=rng.randn(2, 5).astype(np.float32))
    for blob, conv in (("conv1", "conv1"), ("conv2", "conv2")):
        data, diff = net.blobs[blob].data, net.blobs[blob].diff
        # data is the value after the chain (ReLU last), diff the gradient before it (conv's
        # output): a bias moves the convolution's output, so its diff sums the blob's diff.
        assert (data >= 0).all() and (data == 0).any()
        np.testing.assert_allclose(diff.sum((0, 2, 3)), net.params[conv][1].diff, rtol=1e-4,
                                   atol=1e-6)
    # where ReLU cut, the gradient w.r.t. conv1's output is zero, and nonzero elsewhere
    data, diff = net.blobs["conv1"].data, net.blobs["conv1"].diff
    assert not diff[data == 0].any()
    assert diff[data > 0].any()


def test_no_force_backward_and_no_loss_computes_nothing(tmp_path, caplog):
    rng = np.random.RandomState(2)
    proto, model = _write(tmp_path, _main_layers(rng), force=False)
    net = _net(proto, model, rng.randn(*SHAPE).astype(np.float32))
    seed = rng.randn(2, 5).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        out = net.backward(prob=seed)
    assert "force_backward" in caplog.text
    assert not out["data"].any()
    for name, blob in net.blobs.items():
        assert name == "prob" or not blob.diff.any(), name
    np.testing.assert_array_equal(net.blobs["prob"].diff, seed)
    assert not any(b.diff.any() for blobs in net.params.values() for b in blobs)


def test_loss_weight_without_force_backward_leaves_the_input_diff_zero(tmp_path):
    rng = np.random.RandomState(3)
    proto, model = _write(tmp_path, _main_layers(rng, "loss_weight: 2"), force=False)
    x = rng.randn(*SHAPE).astype(np.float32)
    net = _net(proto, model, x)
    net.backward()
    # ip is also read by prob, so (Caffe's insert_splits) a Split carries the loss: ip's diff is
    # the loss weight plus prob's contribution, none as prob feeds no loss
    np.testing.assert_array_equal(net.blobs["ip"].diff, np.full((2, 5), 2, np.float32))
    assert not net.blobs["data"].diff.any()  # inputs need backward only when forced
    assert net.blobs["pool1"].diff.any()
    ref = Reference(proto, model, x, {"ip": np.full((2, 5), 2.0)})
    _check(ref, net, rng, data=False, params=TRAINED)


def _branches(rng, *, force: bool, tmp_path, name: str):
    layers = [
        layer("conv_a", "Convolution", ["data"], ["a"], "convolution_param { num_output: 2 "
              "kernel_size: 3 }", [rng.randn(2, 3, 3, 3) * 0.3, rng.randn(2) * 0.1]),
        layer("conv_b", "Convolution", ["data"], ["b"], "convolution_param { num_output: 2 "
              "kernel_size: 3 }", [rng.randn(2, 3, 3, 3) * 0.3, rng.randn(2) * 0.1]),
        layer("sum", "Eltwise", ["a", "b"], ["c"], "propagate_down: true propagate_down: false"),
        layer("ip", "InnerProduct", ["c"], ["out"], "inner_product_param { num_output: 3 } "
              "loss_weight: 1", [rng.randn(3, 72) * 0.2, rng.randn(3) * 0.1]),
    ]
    return _write(tmp_path, layers, force=force, name=name)


def test_propagate_down_false_stops_a_bottom_unless_forced(tmp_path):
    rng = np.random.RandomState(4)
    x = rng.randn(*SHAPE).astype(np.float32)
    ones = {"out": np.ones((2, 3))}

    proto, model = _branches(np.random.RandomState(5), force=False, tmp_path=tmp_path, name="p")
    net = _net(proto, model, x)
    # Caffe seeds a loss top's diff with its weight, at load
    np.testing.assert_array_equal(net.blobs["out"].diff, np.ones((2, 3), np.float32))
    net.backward()
    assert net.blobs["a"].diff.any() and net.blobs["c"].diff.any()
    assert not net.blobs["b"].diff.any()
    assert not any(b.diff.any() for b in net.params["conv_b"])  # its only top stopped
    assert not net.blobs["data"].diff.any()
    _check(Reference(proto, model, x, ones), net, rng, data=False, params=["conv_a", "ip"])

    # force_backward overrides propagate_down (Caffe's Net::Init ORs AllowForceBackward in):
    # both branches and the input (read by two layers: their diffs summed) get diffs
    proto, model = _branches(np.random.RandomState(5), force=True, tmp_path=tmp_path, name="f")
    net = _net(proto, model, x)
    net.backward()
    np.testing.assert_array_equal(net.blobs["b"].diff, net.blobs["c"].diff)
    _check(Reference(proto, model, x, ones), net, rng, data=True,
           params=["conv_a", "conv_b", "ip"])


def test_keyword_diffs_equal_set_diffs_and_param_diffs_accumulate(tmp_path):
    rng = np.random.RandomState(6)
    proto, model = _write(tmp_path, _main_layers(rng), force=True)
    net = _net(proto, model, rng.randn(*SHAPE).astype(np.float32))
    seed = rng.randn(2, 5).astype(np.float32)

    net.blobs["prob"].diff[...] = seed
    first = {k: v.copy() for k, v in net.backward(diffs=["pool1"]).items()}
    assert set(first) == {"data", "pool1"}
    weights = net.params["conv1"][0].diff.copy()
    net.blobs["prob"].diff[...] = 0
    second = net.backward(prob=seed)
    np.testing.assert_array_equal(second["data"], first["data"])  # blob diffs are overwritten
    np.testing.assert_allclose(net.params["conv1"][0].diff, 2 * weights, rtol=1e-6)  # summed
    net.clear_param_diffs()
    assert not any(b.diff.any() for blobs in net.params.values() for b in blobs)

    with pytest.raises(ValueError, match="do not match net outputs"):
        net.backward(ip=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="not batch sized"):
        net.backward(prob=np.zeros((3, 5), np.float32))

    out = net.backward(end="conv2")  # conv2 down to nothing below it: conv1 untouched
    assert set(out) == {"pool1"}
    np.testing.assert_allclose(out["pool1"], first["pool1"], rtol=1e-6)
    assert net.params["conv2"][0].diff.any() and not net.params["conv1"][0].diff.any()


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "bw_user_layers.py").write_text(textwrap.dedent(MODULE))
    yield
    sys.modules.pop("bw_user_layers", None)


def test_python_layer_backward_takes_part(tmp_path, user_module):
    rng = np.random.RandomState(7)
    conv = [rng.randn(3, 3, 3, 3) * 0.3, rng.randn(3) * 0.1]
    ip = [rng.randn(4, 108) * 0.2, rng.randn(4) * 0.1]

    def net_with(middle, name):
        layers = [layer("conv", "Convolution", ["data"], ["conv"],
                        "convolution_param { num_output: 3 kernel_size: 3 }", conv), middle,
                  layer("ip", "InnerProduct", ["ss"], ["out"], "inner_product_param "
                        "{ num_output: 4 }", ip)]
        return _write(tmp_path, layers, force=True, name=name)

    python = net_with(layer("ss", "Python", ["conv"], ["ss"],
                            "python_param { module: 'bw_user_layers' layer: 'ScaleShift' "
                            """param_str: '{"scale": 2.5, "shift": -1}' }"""), "py")
    plain = net_with(layer("ss", "Power", ["conv"], ["ss"],
                           "power_param { scale: 2.5 shift: -1 }"), "plain")
    x = rng.randn(*SHAPE).astype(np.float32)
    seed = rng.randn(2, 4).astype(np.float32)
    ours, theirs = _net(*python, x), _net(*plain, x)
    got, want = ours.backward(out=seed), theirs.backward(out=seed)
    assert np.abs(want["data"]).max() > 0
    np.testing.assert_allclose(got["data"], want["data"], rtol=1e-5, atol=1e-7)
    for name in ("conv", "ss"):
        np.testing.assert_allclose(ours.blobs[name].diff, theirs.blobs[name].diff, rtol=1e-5,
                                   atol=1e-7)
    for name in ("conv", "ip"):
        for a, b in zip(ours.params[name], theirs.params[name], strict=True):
            np.testing.assert_allclose(a.diff, b.diff, rtol=1e-5, atol=1e-7)
