"""The model seam's contract, over every backend: one parametrized test through ``Model``.

For each kind of model reference (the bundled EfficientNet-Lite0, a factory, TorchScript, an
exported ``.pt2``, ONNX, Caffe, a callable class, an ``hf:`` snapshot) the driver's and the
worker's calls in order: ``kind_of`` → ``capabilities`` → ``describe`` (output names, input preset)
→ ``create`` → ``setup`` → ``predict`` on a small batch of the preset's shape → the requested
outputs by name, one finite row per input, and each row the same when its input is predicted
alone (shards and batches may cut the input list anywhere) → ``teardown``.

The model files are written once per session, each only when its case runs; they are small
(a two-convolution CNN, a one-convolution Caffe net, a two-layer ViT), so this runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gristmill import models
from gristmill.models.classes import as_pixels
from gristmill.spec import ModelSpec

# torch's own deprecation notices about TorchScript and its legacy ONNX exporter, which users'
# files still come from
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KINDS = ("builtin", "factory", "torchscript", "exported", "onnx", "caffe", "callable", "hf")


def _tiny_cnn():
    from models_for_tests import tiny_cnn

    return tiny_cnn()


def _torchscript(folder: Path) -> ModelSpec:
    import torch

    path = folder / "tiny.pt"
    torch.jit.save(torch.jit.script(_tiny_cnn()), str(path))
    return ModelSpec(ref=str(path))


def _exported(folder: Path) -> ModelSpec:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(_tiny_cnn(), (torch.zeros(2, 3, 224, 224),),
                                  dynamic_shapes={"x": {0: batch}})
    path = folder / "tiny.pt2"
    torch.export.save(program, str(path))
    return ModelSpec(ref=str(path))


def _onnx(folder: Path) -> ModelSpec:
    import torch

    path = folder / "tiny.onnx"
    torch.onnx.export(_tiny_cnn(), torch.zeros(1, 3, 224, 224), str(path), dynamo=False,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return ModelSpec(ref=str(path))


def _caffe(folder: Path) -> ModelSpec:
    """Input 3x32x32 → Convolution (4 maps, with weights) → ReLU in place → global mean pool."""
    from google.protobuf import text_format

    from gristmill.caffe import caffe_pb2 as pb

    rng = np.random.default_rng(0)
    net = text_format.Parse("""
        name: "tiny"
        layer { name: "data" type: "Input" top: "data"
                input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
        layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
        layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
                pooling_param { pool: AVE global_pooling: true } }
        """, pb.NetParameter())
    proto = folder / "tiny.prototxt"
    proto.write_text(text_format.MessageToString(net))
    conv = net.layer[1]
    for array in (rng.standard_normal((4, 3, 3, 3)) * 0.1, rng.standard_normal(4) * 0.1):
        blob = conv.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.astype(np.float32).ravel().tolist())
    weights = folder / "tiny.caffemodel"
    weights.write_bytes(net.SerializeToString())
    return ModelSpec(ref=str(proto), weights=str(weights))


def _hf(folder: Path) -> ModelSpec:
    pytest.importorskip("transformers")
    from hf_snapshots import build

    return ModelSpec(ref="hf:" + str(build("vit", folder / "vit")))


BUILD: dict[str, Callable[[Path], ModelSpec]] = {
    "builtin": lambda folder: ModelSpec(ref="efficientnet-lite0"),
    "factory": lambda folder: ModelSpec(ref="models_for_tests:tiny_cnn"),
    "torchscript": _torchscript,
    "exported": _exported,
    "onnx": _onnx,
    "caffe": _caffe,
    "callable": lambda folder: ModelSpec(ref="numpy_models:ColourStats"),
    "hf": _hf,
}


@pytest.fixture(scope="session")
def model_specs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ModelSpec]:
    """``kind`` → the spec of a small model of that kind, its files written on first use."""
    built: dict[str, ModelSpec] = {}

    def spec(kind: str) -> ModelSpec:
        if kind not in built:
            built[kind] = BUILD[kind](tmp_path_factory.mktemp(f"model-{kind}"))
        return built[kind]

    return spec


def _batch(pre, n: int) -> np.ndarray:
    """``n`` inputs in the preset's shape: whole 0..255 values for a model that takes pixels (the
    loaders' rows then hold exactly those), else normalised-range floats."""
    pixels = np.random.default_rng(1).integers(0, 256, (n, *pre.item_shape())).astype(np.float32)
    return pixels if as_pixels(pre) else pixels / 64.0 - 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_every_backend_keeps_the_model_contract(kind: str, model_specs) -> None:
    spec = model_specs(kind)
    assert models.kind_of(spec.ref) == kind
    caps = models.capabilities(spec)
    assert "fp32" in caps.precisions and "image" in caps.modalities

    info = models.describe(spec)
    outputs = info.default_outputs
    assert outputs and set(outputs) <= set(info.outputs)
    assert models.check_outputs((), info, spec.ref) == outputs
    pre = info.preset.complete()
    assert len(pre.item_shape()) == 3 and 3 in (pre.item_shape()[0], pre.item_shape()[2])

    model = models.create(spec, outputs=outputs, device="cpu", threads=1, preprocess=pre)
    assert isinstance(model, models.Model)
    model.setup()
    try:
        batch = _batch(pre, 3)
        names = {"names": ["a.jpg", "b.jpg", "c.jpg"]} if caps.names else {}
        got = model.predict(batch, **names)
        assert list(got) == list(outputs)
        for name, value in got.items():
            assert isinstance(value, np.ndarray) and value.shape[0] == 3, (name, value.shape)
            assert np.isfinite(value).all(), name
        assert any(not np.array_equal(v[0], v[1]) for v in got.values())  # the rows are inputs'
        alone = model.predict(np.ascontiguousarray(batch[1:2]),
                              **({"names": ["b.jpg"]} if caps.names else {}))
        for name, value in got.items():
            assert alone[name].shape == (1, *value.shape[1:]), name
            scale = float(np.abs(value).max()) or 1.0
            np.testing.assert_allclose(alone[name][0], value[1], rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=name)
    finally:
        model.teardown()


def test_an_output_the_model_lacks_is_refused_by_name(model_specs) -> None:
    from gristmill.errors import SpecError

    spec = model_specs("factory")
    info = models.describe(spec)
    assert "body.0" in info.outputs  # a submodule, read by a forward hook
    with pytest.raises(SpecError, match="has no output 'nope'"):
        models.check_outputs(("output", "nope"), info, spec.ref)
    model = models.create(spec, outputs=("output", "body.0"), device="cpu", threads=1)
    model.setup()
    try:
        got = model.predict(_batch(info.preset.complete(), 2))
    finally:
        model.teardown()
    assert got["output"].shape == (2, 5) and got["body.0"].shape[:2] == (2, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_what_a_run_kept_about_a_model_is_what_it_found(kind: str, model_specs,
                                                        tmp_path: Path) -> None:
    """A later driver reads the description, the capabilities and the shared weights an earlier
    one found (``models.memo``), equal to them, for every model made of files; code (a factory, a
    callable class) is described afresh every run."""
    from gristmill.models.memo import Memo

    spec = model_specs(kind)
    first = models.ModelCache(memo=Memo(str(tmp_path / "kept")))
    info, caps = models.describe(spec, first), models.capabilities(spec, first)
    shared = models.share_weights(spec, str(tmp_path / "first"), first, info.default_outputs)
    later = Memo(str(tmp_path / "kept"))
    if kind in ("factory", "callable"):
        assert later.description(spec, "image") is None and later.capabilities(spec) is None
        assert not (tmp_path / "kept").exists()
        return
    assert later.description(spec, "image") == info and later.capabilities(spec) == caps
    again = later.weights(spec, info.default_outputs, str(tmp_path / "later"))
    if shared is None:
        assert again is None
    else:
        assert again is not None and Path(again).read_bytes() == Path(shared).read_bytes()
        assert models.share_weights(spec, str(tmp_path / "later"),
                                    models.ModelCache(memo=later), info.default_outputs) == again
