"""pycaffe's ``Net`` and ``Blob`` on top of :class:`gristmill.caffe.graph.Graph`.

Contract: behaves like ``caffe.Net`` for inference scripts: ``net.blobs[name].data`` is a writable
numpy array (write the input there, then ``forward()``), ``forward`` returns the output blobs and
refreshes every blob it computed, ``net.params[layer][i].data`` are the stored weights (on CPU they
share memory with what runs, so edits take effect, except BatchNorm whose statistics are prescaled
at load). The mode (CPU/GPU) is read at each ``forward`` from :mod:`gristmill.caffe`'s module state.
Every blob pycaffe shows is computed: BatchNorm/Scale are folded into a convolution only inside an
in-place chain (whose middle values pycaffe cannot show) and only for layers whose parameter data
was never handed out; activations run channels_last and become numpy arrays when read. Each
``forward`` on CPU first releases the values it will replace and sets glibc to keep freed memory
(once per process, as gristmill's workers do), so from the second call it runs in the memory the
first one grew, at full speed.
``backward`` is Caffe's (see :mod:`gristmill.caffe.backward` for the rules): ``forward`` records
autograd, on the plain graph, only for the layers Caffe would run backward for, so a deploy net
without ``force_backward`` or a ``loss_weight`` runs the fast forward and backward computes nothing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from . import backward as bw
from . import caffe_pb2 as pb
from .blob import Blob
from .graph import Graph, Op

log = logging.getLogger(__name__)

TRAIN = pb.TRAIN
TEST = pb.TEST

_state: dict[str, Any] = {"mode": "cpu", "device": 0, "allocator": False}


class _LayerView:
    def __init__(self, type_: str, blobs: list[Blob]) -> None:
        self.type = type_
        self.blobs = blobs


class _ParamBlob(Blob):
    """A parameter blob that remembers whether its data was handed out (and so may be edited)."""

    touched = False

    def _get(self) -> np.ndarray:
        self.touched = True
        return Blob.data.fget(self)

    def _put(self, value: np.ndarray) -> None:
        self.touched = True
        Blob.data.fset(self, value)

    data = property(_get, _put)


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
            python = op.layer.attrs.get("python")
            if python is not None and python.blobs:
                # pycaffe's net.params of a Python layer are the layer's own blobs
                self.params[op.layer.name] = list(python.blobs)
            elif raw:
                self.params[op.layer.name] = [_ParamBlob(a.shape, a) for a in raw]
        self.inputs = list(self.graph.inputs)
        self.outputs = self.graph.outputs()
        self._layer_names = [op.layer.name for op in self.graph.ops]
        self.layers = [_LayerView(op.layer.type, self.params.get(op.layer.name, []))
                       for op in self.graph.ops]
        self._device = torch.device("cpu")
        self._fast: Graph | None = None  # self.graph with BatchNorm/Scale folded, for forward
        self._fast_skip: frozenset[str] = frozenset()
        self._flags = bw.analyse(self.graph, self._n_params)
        self._records: dict[int, bw.Record] = {}
        self._split_diffs: dict[bw.Key, np.ndarray] = {}
        for key, weight in self._flags.loss_seeds():
            # Caffe keeps a loss top's weight in its diff: backward's seed
            shape = self.blobs[key].shape if isinstance(key, str) else self.graph.shapes[key[1]]
            self._diff_of(key, shape)[...] = weight

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
            self._device, self._fast = device, None
        if device.type == "cpu":
            _tune_allocator()
        values = self._values(end)
        for name in values:
            if name not in self.inputs:
                # the previous call's values, freed before this call allocates: otherwise both
                # calls' blobs live at once and the second call grows the heap (page faults)
                self.blobs[name]._release()
        feeds = {n: torch.from_numpy(self.blobs[n].data).to(device) for n in self.inputs}
        if self._flags.any():
            plan = self.graph._plan_ids(set(values.values()))
            env, self._records = bw.record(
                self._flags, plan, {self.graph.inputs[n]: t for n, t in feeds.items()},
                param_grads=self._param_grads)
            results = {n: env[v] for n, v in values.items()}
        else:
            # channels_last activations: oneDNN's (and cuDNN's) fast layout; every blob keeps the
            # tensor and converts to numpy only when read (see Blob)
            feeds = {n: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                     for n, t in feeds.items()}
            graph = self.graph if end is not None else self._fast_graph()
            with torch.inference_mode():
                results = graph.run(feeds, tuple(values), values=None if end is None else values)
        for name, tensor in results.items():
            if name not in self.inputs:
                self.blobs[name]._set_tensor(tensor.detach())
        outs = ([end] if end else self.outputs) + list(blobs or [])
        return {name: self.blobs[name].data for name in outs}

    def backward(self, diffs: list[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """Caffe's backward from layer ``start`` (default: the last) down to ``end`` (the first).

        The seeds are the output blobs' diffs: set ``net.blobs[top].diff[...]`` beforehand, or
        pass one array per net output as keyword arguments. Fills the blobs' and the parameters'
        diffs (parameter diffs accumulate, as in Caffe: see ``clear_param_diffs``) and returns the
        diffs of the net inputs (of ``end``'s bottoms when given) plus the blobs named in
        ``diffs``. Which diffs are computed follows Caffe: see :mod:`gristmill.caffe.backward`.
        """
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise ValueError(f"Top diff arguments {sorted(kwargs)} do not match net outputs "
                                 f"{sorted(self.outputs)}")
            for top, diff in kwargs.items():
                if np.shape(diff)[0] != self.blobs[top].shape[0]:
                    raise ValueError(f"Diff for {top!r} is not batch sized")
                self.blobs[top].diff[...] = diff
        flags = self._flags
        hi = self._layer_index(start) if start is not None else len(flags.nodes) - 1
        lo = self._layer_index(end) if end is not None else 0
        if end is not None:
            op = flags.nodes[lo].op
            value_names = self.graph.value_names()
            names = [value_names[v] for v in op.inputs]
        else:
            names = list(self.inputs)
        names += [n for n in diffs or [] if n not in names]
        if not flags.any():
            log.warning("net %r: no layer needs backward (no loss_weight and force_backward is "
                        "false), so Caffe computes no diffs; add 'force_backward: true' to the "
                        "prototxt", self.graph.name)
        bw.backward(flags, self._records, lo, hi, self._diff_of,
                    lambda op: [b.diff for b in self.params[op.layer.name]])
        return {n: self.blobs[n].diff for n in names}

    def clear_param_diffs(self) -> None:
        """Zero every parameter's diff (backward adds to them, as Caffe's layers do)."""
        for blobs in self.params.values():
            for blob in blobs:
                blob.diff[...] = 0

    def _layer_index(self, name: str) -> int:
        if name not in self._flags.index:
            raise KeyError(f"no layer named {name!r}")
        return self._flags.index[name]

    def _diff_of(self, key: bw.Key, shape: tuple[int, ...] | None) -> np.ndarray:
        if isinstance(key, str):
            return self.blobs[key].diff
        buf = self._split_diffs.get(key)
        if buf is None or (shape is not None and buf.shape != shape):
            buf = self._split_diffs[key] = np.zeros(shape or (), np.float32)
        return buf

    def _n_params(self, op: Op) -> int:
        python = op.layer.attrs.get("python")
        if python is not None:
            return len(python.blobs)
        return len(self.graph.raw_params.get(op.layer.name, []))

    def _param_grads(self, op: Op) -> bool:
        """Whether autograd computes ``op``'s parameter diffs (its tensors are the stored blobs)."""
        return (op.layer.type not in bw.NO_PARAM_GRAD
                and len(op.layer.params) == len(self.params.get(op.layer.name, [])))

    def _fast_graph(self) -> Graph:
        """The graph ``forward`` runs when no backward is recorded: BatchNorm/Scale folded into
        the convolution before them inside in-place chains, where pycaffe shows only the chain's
        last value anyway. Layers whose parameter data was handed out (``net.params[...].data``,
        so maybe edited) are left out of folds, from then on, so edits keep taking effect."""
        touched = frozenset(name for name, blobs in self.params.items()
                            if any(getattr(b, "touched", False) for b in blobs))
        if self._fast is None or touched != self._fast_skip:
            self._fast = self.graph.clone()
            self._fast.fold(tuple(self.blobs), skip=touched)
            self._fast_skip = touched
        return self._fast

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


def _tune_allocator() -> None:
    """glibc settings of gristmill's workers, once per process: freed blobs stay in the heap.

    Without them glibc maps each large tensor afresh and unmaps it when freed, raising its mmap
    threshold only as it sees such frees, so the first calls page-fault on every activation
    (measured on open_nsfw, batch 8: 87k, 72k, 15k, then 0 faults per call); with them (and the
    previous blobs released before each call) only the first call grows the heap.
    """
    if not _state["allocator"]:
        from ..tuning import tune_allocator

        _state["allocator"] = True
        tune_allocator()


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
