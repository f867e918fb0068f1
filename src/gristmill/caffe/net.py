"""pycaffe's ``Net`` and ``Blob`` on top of :class:`gristmill.caffe.graph.Graph`.

Contract: behaves like ``caffe.Net`` for inference scripts: ``net.blobs[name].data`` is a writable
numpy array (write the input there, then ``forward()``), ``forward`` returns the output blobs and
refreshes every blob it computed, ``net.params[layer][i].data`` are the stored weights (on CPU they
share memory with what runs, so edits take effect, except BatchNorm whose statistics are prescaled
at load). The mode (CPU/GPU) is read at each ``forward`` from :mod:`gristmill.caffe`'s module state.
Graph rewrites (BatchNorm folding) are not applied here: pycaffe scripts may inspect any blob.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from . import caffe_pb2 as pb
from .blob import Blob
from .graph import Graph

log = logging.getLogger(__name__)

TRAIN = pb.TRAIN
TEST = pb.TEST

_state = {"mode": "cpu", "device": 0}


class _LayerView:
    def __init__(self, type_: str, blobs: list[Blob]) -> None:
        self.type = type_
        self.blobs = blobs


class Net:
    """``Net(prototxt, weights, phase)``, ``Net(prototxt, phase, weights=...)`` or
    ``Net(prototxt, phase)`` (weights zero)."""

    def __init__(self, prototxt: str, *args: Any, weights: str | None = None,
                 phase: int | None = None) -> None:
        rest = list(args)
        if rest and isinstance(rest[0], str | bytes):
            weights = rest.pop(0)
        if rest:
            phase = rest.pop(0)
        if rest:
            raise TypeError("Net(prototxt, [weights,] phase[, weights=...])")
        if phase is None:
            raise TypeError("Net needs a phase: caffe.TEST (or caffe.TRAIN)")
        self.graph = Graph.load(str(prototxt), str(weights) if weights else None, phase=phase)
        shapes = self.graph.infer_shapes(self.graph.input_shapes)
        self.blobs: OrderedDict[str, Blob] = OrderedDict(
            (name, Blob(shape)) for name, shape in shapes.items())
        self.params: OrderedDict[str, list[Blob]] = OrderedDict()
        for op in self.graph.ops:
            raw = self.graph.raw_params.get(op.layer.name)
            if raw:
                self.params[op.layer.name] = [Blob(a.shape, a) for a in raw]
        self.inputs = list(self.graph.inputs)
        self.outputs = self.graph.outputs()
        self._layer_names = [op.layer.name for op in self.graph.ops]
        self.layers = [_LayerView(op.layer.type, self.params.get(op.layer.name, []))
                       for op in self.graph.ops]
        self._device = torch.device("cpu")

    @property
    def layer_dict(self) -> OrderedDict[str, _LayerView]:
        return OrderedDict(zip(self._layer_names, self.layers, strict=True))

    def reshape(self) -> None:
        """Propagate the input blobs' shapes to every other blob."""
        shapes = self.graph.infer_shapes({n: self.blobs[n].shape for n in self.inputs})
        for name, shape in shapes.items():
            self.blobs[name].reshape(*shape)

    def forward(self, blobs: list[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the net (up to layer ``end``); returns the outputs plus ``blobs``."""
        if start is not None:
            raise ValueError("forward(start=...) is not supported; feed the inputs")
        for name, array in kwargs.items():
            if name not in self.inputs:
                raise KeyError(f"{name!r} is not an input of this net; inputs: {self.inputs}")
            if array.shape[0] != self.blobs[name].shape[0]:
                raise ValueError("Input is not batch sized")
            self.blobs[name].data[...] = array
        device = _device()
        if device != self._device:
            self.graph.to(device)
            self._device = device
        values = self._values(end)
        feeds = {n: torch.from_numpy(self.blobs[n].data).to(device) for n in self.inputs}
        with torch.inference_mode():
            results = self.graph.run(feeds, tuple(values), values=values)
        for name, tensor in results.items():
            if name not in self.inputs:
                self.blobs[name]._set(np.ascontiguousarray(tensor.cpu().numpy()))
        outs = ([end] if end else self.outputs) + list(blobs or [])
        return {name: self.blobs[name].data for name in outs}

    def _values(self, end: str | None) -> dict[str, int]:
        current = dict(self.graph.inputs)
        for op in self.graph.ops:
            current.update(zip(op.tops, op.outputs, strict=True))
            if end is not None and op.layer.name == end:
                return current
        if end is not None:
            raise KeyError(f"no layer named {end!r}")
        return current

    def forward_all(self, blobs: list[str] | None = None,
                    **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """``forward`` over inputs of any length, in chunks of the net's batch size."""
        names = set(self.outputs + list(blobs or []))
        collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
        total = len(next(iter(kwargs.values()))) if kwargs else self.blobs[self.inputs[0]].num
        batch = self.blobs[self.inputs[0]].num
        for start in range(0, total, batch):
            chunk = {}
            for name, array in kwargs.items():
                part = array[start:start + batch]
                if len(part) < batch:  # pad the last chunk, as pycaffe does
                    pad = np.zeros((batch - len(part), *part.shape[1:]), dtype=part.dtype)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            outs = self.forward(blobs=list(blobs or []), **chunk)
            for name in names:
                collected[name].append(outs[name].copy())
        return {n: np.concatenate(v)[:total] for n, v in collected.items()}


def _device() -> torch.device:
    if _state["mode"] == "gpu":
        return torch.device("cuda", int(_state["device"]))
    return torch.device("cpu")


def set_mode_cpu() -> None:
    _state["mode"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("caffe.set_mode_gpu(): no CUDA device is available to PyTorch on this "
                           "machine; use caffe.set_mode_cpu()")
    _state["mode"] = "gpu"


def set_device(device: int) -> None:
    _state["device"] = int(device)
