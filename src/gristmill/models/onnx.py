"""ONNX models through onnxruntime; outputs are the graph's output names.

``describe`` reads only the graph's signature (an onnxruntime session on the CPU, no run), so a
missing or corrupt file and an unknown output name fail in the driver. Workers run the session
with the worker's thread budget and sequential execution, so two workers never oversubscribe cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import SpecError, first_line
from ..spec import ModelSpec
from .base import FULL_PRECISION, IMAGENET_PRESET, Capabilities, ModelCache, ModelInfo


def _session(path: str, threads: int, device: str) -> Any:
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise SpecError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:
        first = first_line(exc)
        raise SpecError(f"model file {path} is not a valid ONNX model: {first}") from None


def capabilities(spec: ModelSpec) -> Capabilities:
    return FULL_PRECISION


def describe(spec: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    session = _session(spec.ref, 1, "cpu")
    names = tuple(o.name for o in session.get_outputs())
    preset = IMAGENET_PRESET
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
        if shape[1] in (1, 3):
            preset = replace(preset, crop=(shape[2], shape[3]), layout="NCHW")
        elif shape[3] in (1, 3):
            preset = replace(preset, crop=(shape[1], shape[2]), layout="NHWC")
    return ModelInfo(outputs=names, default_outputs=names, preset=preset)


@dataclass
class OnnxModel:
    spec: ModelSpec
    outputs: tuple[str, ...]
    device: str = "cpu"
    threads: int = 0
    session: Any = None
    input_name: str = ""

    def setup(self) -> None:
        self.session = _session(self.spec.ref, self.threads, self.device)
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(self.outputs), {self.input_name: batch})
        return dict(zip(self.outputs, values, strict=True))

    def teardown(self) -> None:
        self.session = None


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int) -> OnnxModel:
    return OnnxModel(spec=spec, outputs=outputs, device=device, threads=threads)
