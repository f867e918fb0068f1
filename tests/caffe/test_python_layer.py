"""``type: "Python"`` layers: a user module with a ``caffe.Layer`` subclass (``import caffe``
unchanged) beside the prototxt, through ``gristmill.caffe.Net`` and ``gristmill run``."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from jobhelp import cli

from .netkit import USER_LAYERS as MODULE
from .netkit import layer, write_net

PARAM = ("python_param { module: 'user_layers' layer: 'ScaleShift' "
         """param_str: '{"scale": 2.5, "shift": -1}' }""")


def _nets(folder, shape):
    (folder / "user_layers.py").write_text(textwrap.dedent(MODULE))
    python = [layer("ss", "Python", ["data"], ["ss"], PARAM),
              layer("two", "Python", ["ss"], ["total", "peak"],
                    'python_param { module: "user_layers" layer: "SumAndMax" }'),
              layer("out", "Pooling", ["ss"], ["out"],
                    "pooling_param { pool: AVE global_pooling: true }")]
    plain = [layer("ss", "Power", ["data"], ["ss"], "power_param { scale: 2.5 shift: -1 }"),
             layer("out", "Pooling", ["ss"], ["out"],
                   "pooling_param { pool: AVE global_pooling: true }")]
    return (write_net(folder, python, shape=shape, name="py"),
            write_net(folder, plain, shape=shape, name="plain"))


@pytest.fixture
def no_user_module():
    yield
    sys.modules.pop("user_layers", None)


def test_net_runs_python_layer_with_param_str(tmp_path, no_user_module):
    import gristmill.caffe as caffe

    (proto, model), _ = _nets(tmp_path, (2, 3, 5, 4))
    assert "user_layers" not in sys.modules
    net = caffe.Net(proto, model, caffe.TEST)
    x = np.random.RandomState(0).randn(2, 3, 5, 4).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()
    want = x * 2.5 - 1
    np.testing.assert_allclose(net.blobs["ss"].data, want, rtol=1e-6)
    np.testing.assert_allclose(out["total"][:, 0], want.reshape(2, -1).sum(1), rtol=1e-5)
    np.testing.assert_allclose(out["peak"][:, 0], want.reshape(2, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(out["out"], want.mean((2, 3), keepdims=True), rtol=1e-5)
    assert net.blobs["total"].shape == (2, 1)
    # the module's `import caffe` got gristmill.caffe: its Layer is our base class
    assert issubclass(sys.modules["user_layers"].ScaleShift, caffe.Layer)


def test_graph_refuses_python_layers_when_not_allowed(tmp_path, no_user_module):
    from gristmill.caffe.graph import Graph
    from gristmill.errors import SpecError

    (proto, model), _ = _nets(tmp_path, (1, 3, 4, 4))
    with pytest.raises(SpecError, match=r"'user_layers'.*--allow-python-layers"):
        Graph.load(proto, model, python_layers=False)
    assert "user_layers" not in sys.modules


def test_missing_module_is_one_line(tmp_path):
    import gristmill.caffe as caffe
    from gristmill.errors import SpecError

    proto, model = write_net(tmp_path, [layer("p", "Python", ["data"], ["p"],
                                              'python_param { module: "nowhere_mod" '
                                              'layer: "X" }')], shape=(1, 3, 4, 4))
    with pytest.raises(SpecError, match=r"module 'nowhere_mod' is not on sys\.path nor beside"):
        caffe.Net(proto, model, caffe.TEST)


@pytest.mark.slow
def test_gristmill_run_needs_the_flag_and_matches_plain_layers(tmp_path, small_tree):
    import gristmill

    root, names = small_tree
    (proto, model), (plain_proto, plain_model) = _nets(tmp_path, (1, 3, 16, 16))
    common = ["--resize", "16x16", "--batch-size", "4", "--shard-size", "16", "--workers", "2"]
    refused = cli("run", str(root), "-o", str(tmp_path / "refused"), "--model", proto,
                  "--weights", model, "--outputs", "out", *common)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "user_layers" in lines[0] and "--allow-python-layers" in lines[0]
    assert not (tmp_path / "refused" / "job.json").exists()

    done = cli("run", str(root), "-o", str(tmp_path / "py"), "--model", proto, "--weights",
               model, "--outputs", "out,total", "--allow-python-layers", *common)
    assert done.returncode == 0, done.stderr
    plain = cli("run", str(root), "-o", str(tmp_path / "plain"), "--model", plain_proto,
                "--weights", plain_model, "--outputs", "out", *common)
    assert plain.returncode == 0, plain.stderr
    with gristmill.open(str(tmp_path / "py")) as ours, \
            gristmill.open(str(tmp_path / "plain")) as theirs:
        assert ours.names == theirs.names == names
        np.testing.assert_allclose(ours["out"][()], theirs["out"][()], rtol=1e-5, atol=1e-5)
        assert ours["total"][()].shape == (len(names), 1)
