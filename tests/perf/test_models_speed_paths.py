"""Shared weights, precision and the GPU copy path of the torch backend (CUDA parts skip on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gristmill.models.torch import TorchModel, load_shared, share_weights
from gristmill.spec import ModelSpec

SPEC = ModelSpec(ref="efficientnet-lite0")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = share_weights(SPEC, str(tmp_path_factory.mktemp("cache")))
    assert path is not None
    return path


def _mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_shared_weights_are_mapped_from_the_file_not_copied(shared: str) -> None:
    module = load_shared(SPEC, shared)
    tensors = [*module.parameters(), *module.buffers()]
    assert tensors and not any(t.is_meta for t in tensors)
    assert shared in _mapped_files()
    conv = module._conv_stem.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    # channels_last on an already channels_last module keeps the same (mapped) storage
    before = conv.data_ptr()
    module.to(memory_format=torch.channels_last)
    assert module._conv_stem.weight.data_ptr() == before


def test_shared_weights_give_the_same_outputs(shared: str, lite0: torch.nn.Module) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    a = TorchModel(SPEC, ("features",), shared_weights=shared)
    a.setup()
    with torch.inference_mode():
        b = lite0(torch.from_numpy(x))["features"].numpy()
    np.testing.assert_allclose(a.predict(x)["features"], b, rtol=1e-4, atol=1e-4)


def test_models_that_are_not_eager_modules_share_nothing(tmp_path: Path) -> None:
    from gristmill.models import share_weights as dispatch

    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    assert share_weights(ModelSpec(ref=str(scripted)), str(tmp_path)) is None
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    assert dispatch(ModelSpec(ref=str(onnx)), str(tmp_path)) is None


def test_bf16_autocast_on_cpu_returns_float32(shared: str) -> None:
    model = TorchModel(SPEC, ("features",), precision="bf16", shared_weights=shared)
    model.setup()
    out = model.predict(np.zeros((2, 3, 224, 224), np.float32))["features"]
    assert out.dtype == np.float32 and out.shape == (2, 1280)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pinned_side_stream_copy_matches_cpu(shared: str) -> None:
    x = np.random.default_rng(1).standard_normal((4, 3, 224, 224)).astype(np.float32)
    cpu = TorchModel(SPEC, ("features",), shared_weights=shared)
    cpu.setup()
    gpu = TorchModel(SPEC, ("features",), device="cuda:0", shared_weights=shared)
    gpu.setup()
    gpu.pin_host(x.ctypes.data, x.nbytes)
    assert gpu._pinned
    np.testing.assert_allclose(gpu.predict(x)["features"], cpu.predict(x)["features"],
                               rtol=1e-2, atol=1e-2)
    gpu.teardown()
    assert not gpu._pinned


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_autocast_returns_float32(shared: str) -> None:
    model = TorchModel(SPEC, ("features",), device="cuda:0", precision="fp16",
                       shared_weights=shared)
    model.setup()
    assert model.predict(np.zeros((2, 3, 224, 224), np.float32))["features"].dtype == np.float32



def test_building_a_factory_on_meta_skips_its_initialisers(tmp_path: Path) -> None:
    """A factory's ``nn.init`` calls on meta tensors would import torch._dynamo in every worker
    (measured 1.4 s and 67 MB for a ResNet-50); the mapped module still gets every saved value.
    Run in a fresh interpreter: this one has imported everything already."""
    import os
    import subprocess
    import sys

    ref = "models_for_tests:initialised_cnn"
    path = share_weights(ModelSpec(ref=ref), str(tmp_path))
    code = (
        "import sys, torch\n"
        "from gristmill.models.torch import load_shared\n"
        "from gristmill.spec import ModelSpec\n"
        f"module = load_shared(ModelSpec(ref={ref!r}), {path!r})\n"
        "assert 'torch._dynamo' not in sys.modules, 'the meta build imported torch._dynamo'\n"
        f"state = torch.load({path!r}, weights_only=True)\n"
        "assert module.state_dict().keys() == state.keys()\n"
        "for k, v in module.state_dict().items():\n"
        "    assert torch.equal(v, state[k]), k\n"
        "print('ok', len(state))\n")
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    # conv (its BatchNorm folded in: weight and a bias) and linear (weight, bias)
    assert result.stdout.split() == ["ok", "4"]
