"""Backends declare what they can do; the driver decides from the declaration, not the name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gristmill import job, models
from gristmill.errors import SpecError
from gristmill.spec import JobSpec, ModelSpec


def test_each_backend_declares_its_capabilities(tmp_path: Path) -> None:
    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    eager = models.capabilities(ModelSpec(ref="models_for_tests:tiny_cnn"))
    script = models.capabilities(ModelSpec(ref=str(scripted)))
    assert eager.shared_weights and eager.pinned_input and "bf16" in eager.precisions
    assert not script.shared_weights and "bf16" in script.precisions
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    caps = models.capabilities(ModelSpec(ref=str(onnx)))
    assert caps.precisions == {"fp32"} and not caps.shared_weights and not caps.pinned_input


def test_a_precision_the_backend_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [None, 3, 8, 8])])
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    spec = JobSpec(sources=(str(tmp_path),), out=str(tmp_path / "out"),
                   model=ModelSpec(ref=str(path)), precision="bf16", device="cpu")
    with pytest.raises(SpecError) as err:
        job.resolve(spec)
    assert "--precision bf16" in str(err.value) and "fp32" in str(err.value)
    assert "\n" not in str(err.value)
