"""``Net.forward``'s fast path: BatchNorm/Scale folded only inside in-place chains, channels_last
activations converted to numpy when read; every blob as the plain graph computes it, and edits
of parameter data still take effect."""

from __future__ import annotations

import numpy as np

from .netkit import layer, run_graph, write_net

SHAPE = (2, 3, 9, 9)


def _layers(rng: np.random.RandomState) -> list:
    def bn(name, bottom, top, c):
        return layer(name, "BatchNorm", [bottom], [top], "",
                     [rng.randn(c) * 0.1, rng.uniform(0.5, 1.5, c), np.ones(1)])

    def scale(name, bottom, top, c):
        return layer(name, "Scale", [bottom], [top], "scale_param { bias_term: true }",
                     [rng.randn(c) * 0.5 + 1, rng.randn(c) * 0.1])

    return [
        layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 4 "
              "kernel_size: 3 }", [rng.randn(4, 3, 3, 3) * 0.3, rng.randn(4) * 0.1]),
        bn("bn1", "conv1", "conv1", 4), scale("sc1", "conv1", "conv1", 4),
        layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        # not in place: conv2's own value is a blob pycaffe shows, so it is not folded
        layer("conv2", "Convolution", ["conv1"], ["conv2"], "convolution_param { num_output: 5 "
              "kernel_size: 3 bias_term: false }", [rng.randn(5, 4, 3, 3) * 0.3]),
        bn("bn2", "conv2", "bn2", 5),
        layer("pool", "Pooling", ["bn2"], ["pool"], "pooling_param { pool: MAX kernel_size: 2 "
              "stride: 2 }"),
    ]


def test_fast_forward_shows_every_blob_and_takes_param_edits(tmp_path):
    import torch

    import gristmill.caffe as caffe
    from gristmill.caffe.graph import Graph

    rng = np.random.RandomState(0)
    proto, model = write_net(tmp_path, _layers(rng), shape=SHAPE)
    x = rng.randn(*SHAPE).astype(np.float32)
    net = caffe.Net(proto, model, caffe.TEST)
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert len(net._fast.ops) == len(net.graph.ops) - 2  # bn1 and sc1 folded, bn2 kept
    want = run_graph(proto, model, x, tuple(net.blobs))
    for name, blob in net.blobs.items():
        data = blob.data
        assert data.dtype == np.float32 and data.flags.c_contiguous and data.flags.writeable
        np.testing.assert_allclose(data, want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(out["pool"], net.blobs["pool"].data)

    # net surgery through a held reference, after the first read: the layer leaves the fold
    weights = net.params["conv1"][0].data
    net.forward()
    weights *= -1.5
    net.params["sc1"][1].data[...] = 0.25
    net.forward()
    assert len(net._fast.ops) == len(net.graph.ops)
    graph = Graph.load(proto, model)  # the plain graph with the same edits
    for op in graph.ops:
        if op.layer.name in ("conv1", "sc1"):
            op.layer.params = [torch.from_numpy(b.data.copy()).reshape(p.shape)
                               for b, p in zip(net.params[op.layer.name], op.layer.params,
                                               strict=True)]
    with torch.inference_mode():
        edited = graph.run({"data": torch.from_numpy(x)}, ("conv1", "pool"))
    for name in ("conv1", "pool"):
        np.testing.assert_allclose(net.blobs[name].data, edited[name].numpy(), rtol=1e-4,
                                   atol=1e-5)
    assert not np.allclose(net.blobs["conv1"].data, want["conv1"], atol=1e-3)


def test_zero_axis_blob_keeps_its_value(tmp_path):
    """Reduction over every axis makes a 0-d blob; reading it must not lose the value."""
    import torch

    import gristmill.caffe as caffe
    from gristmill.caffe.blob import Blob

    proto, model = write_net(tmp_path, [
        layer("total", "Reduction", ["data"], ["total"],
              "reduction_param { operation: ASUM axis: 0 coeff: -1 }")], shape=SHAPE)
    x = np.random.RandomState(3).randn(*SHAPE).astype(np.float32)
    net = caffe.Net(proto, model, caffe.TEST)
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert out["total"].shape == ()
    np.testing.assert_allclose(out["total"], -np.abs(x).sum(), rtol=1e-5)

    blob = Blob(())
    blob._set_tensor(torch.tensor(2.5))
    assert blob.data.shape == () and float(blob.data) == 2.5
    blob._set_tensor(torch.arange(6.0).reshape(2, 3).t())  # not C-contiguous: copied
    assert blob.data.flags.c_contiguous and blob.data.tolist() == [[0, 3], [1, 4], [2, 5]]


def test_forward_frees_the_previous_blobs_before_computing(tmp_path, monkeypatch):
    """From its second call, forward reuses the memory of the blobs it replaces (no heap growth,
    so no page faults): the previous values are gone before the first layer runs, and glibc is
    told once per process to keep freed memory (the workers' allocator settings)."""
    import weakref

    import gristmill.caffe as caffe
    from gristmill import tuning
    from gristmill.caffe import net as net_module

    calls = []
    monkeypatch.setattr(tuning, "tune_allocator", lambda: calls.append(1) or True)
    monkeypatch.setitem(net_module._state, "allocator", False)
    proto, model = write_net(tmp_path, _layers(np.random.RandomState(1)), shape=SHAPE)
    net = caffe.Net(proto, model, caffe.TEST)
    net.blobs["data"].data[...] = np.random.RandomState(2).randn(*SHAPE)
    net.forward()
    net.blobs["bn2"].data  # noqa: B018  (read: the numpy copy is what the blob holds now)
    previous = {name: weakref.ref(net.blobs[name]._tensor if net.blobs[name]._tensor is not None
                                  else net.blobs[name]._data)
                for name in ("conv1", "conv2", "bn2", "pool")}
    alive_when_first_layer_ran = []
    first = net._fast_graph().ops[0].layer
    fn = first.fn

    def watching(xs, ps):
        alive_when_first_layer_ran.extend(n for n, ref in previous.items() if ref() is not None)
        return fn(xs, ps)
    first.fn = watching
    net.forward()
    assert alive_when_first_layer_ran == []
    caffe.Net(proto, model, caffe.TEST).forward()
    assert calls == [1]
    net.forward(end="conv2")  # a partial forward keeps the blobs it does not recompute
    assert net.blobs["pool"].data.any()
