"""A Caffe net as an executable PyTorch graph with blob taps, pruning and BatchNorm folding.

Contract: ``Graph.load(prototxt, weights)`` parses both files and builds one :class:`Op` per TEST
layer. Blobs are versioned: an in-place layer (``top == bottom``) writes a new version of the blob,
and the *name* of a blob refers to its last version, as in pycaffe (``conv1`` after an in-place
ReLU is the rectified value). ``run(feeds, outputs)`` computes only the ops the requested blobs
need; ``fold()`` merges BatchNorm/Scale into the convolution before them where no one can observe
the difference. Errors a user can cause raise one-line ``SpecError``; the graph runs on whatever
device its parameters were moved to with ``to()``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SpecError
from . import caffe_pb2 as pb
from . import layers as L
from .proto import blob_array, in_phase, net_inputs, read_caffemodel, read_prototxt

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Op:
    """One layer placed in the graph: it reads value ids ``inputs`` and writes ``outputs``."""

    layer: L.Layer
    inputs: list[int]
    outputs: list[int]
    tops: list[str]
    # What Caffe's backward pass reads from the LayerParameter (see caffe/backward.py).
    propagate_down: tuple[bool, ...] = ()
    lr_mult: tuple[float, ...] = ()
    loss_weight: tuple[float, ...] = ()


class Graph:
    """The executable net. ``blobs`` maps each blob name to the value id of its last version."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: list[Op] = []
        self.inputs: dict[str, int] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.blobs: dict[str, int] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.raw_params: dict[str, list[np.ndarray]] = {}
        self.force_backward = False
        self._count = 0
        self._plans: dict[tuple, list[Op]] = {}

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def load(cls, prototxt: str, weights: str | None, *, phase: int = pb.TEST,
             python_layers: bool = True) -> Graph:
        """Parse ``prototxt`` (and ``weights`` when given) and build the graph for ``phase``.

        ``python_layers`` False refuses ``type: "Python"`` layers (they import and run user code);
        when allowed, their modules are looked up on ``sys.path`` and then beside the prototxt.
        """
        net = read_prototxt(prototxt)
        stored = _weights_by_layer(read_caffemodel(weights)) if weights else None
        dirs = [os.path.dirname(os.path.abspath(prototxt))] if python_layers else None
        return cls.build(net, stored, phase=phase, python_dirs=dirs)

    @classmethod
    def build(cls, net: pb.NetParameter, stored: dict[str, list[np.ndarray]] | None, *,
              phase: int = pb.TEST, python_dirs: list[str] | None = None) -> Graph:
        """The graph of ``net``; ``python_dirs`` None refuses Python layers."""
        graph = cls(net.name)
        graph.force_backward = bool(net.force_backward)
        layers = [lp for lp in net.layer if in_phase(lp, phase)]
        for name, shape in net_inputs(net):
            graph.inputs[name] = graph.blobs[name] = graph._new(shape)
            graph.input_shapes[name] = shape
        if not graph.inputs and not any(lp.type in L.SOURCES for lp in layers):
            raise SpecError(f"net {net.name!r} declares no input (Input layer, input/input_dim "
                            "or input/input_shape)")
        for lp in layers:
            if lp.type == "Input":
                continue
            if lp.type == "Python":
                if python_dirs is None:
                    raise python_refused(lp)
            elif lp.type not in L.BUILDERS:
                raise L.unsupported(lp)
            graph._add(lp, stored, python_dirs or [])
        return graph

    def _new(self, shape: tuple[int, ...]) -> int:
        self._count += 1
        self.shapes[self._count] = tuple(int(s) for s in shape)
        return self._count

    def _add(self, lp: pb.LayerParameter, stored: dict[str, list[np.ndarray]] | None,
             python_dirs: list[str]) -> None:
        missing = [b for b in lp.bottom if b not in self.blobs]
        if missing:
            raise SpecError(f"layer {lp.name!r} ({lp.type}) reads blob {missing[0]!r}, "
                            "which no earlier layer produces")
        inputs = [self.blobs[b] for b in lp.bottom]
        shapes = [self.shapes[v] for v in inputs]
        blobs = None if stored is None else stored.get(lp.name, [])
        if lp.type == "Python":
            from .pylayer import build_python

            layer = build_python(lp, blobs, shapes, python_dirs)
        else:
            layer = L.build(lp, blobs, shapes)
        if blobs is not None:
            self.raw_params[lp.name] = blobs
        elif layer.params:
            self.raw_params[lp.name] = [p.numpy() for p in layer.params]
        try:
            out_shapes = _meta_shapes(layer, shapes)
        except (RuntimeError, ValueError, IndexError) as e:
            raise SpecError(f"layer {lp.name!r} ({lp.type}) cannot take inputs of shapes "
                            f"{shapes}: {' '.join(str(e).split())[:200]}") from None
        if len(out_shapes) != len(lp.top):
            raise SpecError(f"layer {lp.name!r} ({lp.type}) makes {len(out_shapes)} outputs "
                            f"but names {len(lp.top)} tops")
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise SpecError(f"layer {lp.name!r} ({lp.type}): {len(lp.propagate_down)} "
                            f"propagate_down for {len(lp.bottom)} bottoms (give 0 or one each)")
        if lp.loss_weight and len(lp.loss_weight) != len(lp.top):
            raise SpecError(f"layer {lp.name!r} ({lp.type}): {len(lp.loss_weight)} loss_weight "
                            f"for {len(lp.top)} tops (give 0 or one each)")
        outputs = [self._new(s) for s in out_shapes]
        self.ops.append(Op(layer, inputs, outputs, list(lp.top),
                           tuple(bool(d) for d in lp.propagate_down),
                           tuple(float(p.lr_mult) for p in lp.param),
                           tuple(float(w) for w in lp.loss_weight)))
        for top, v in zip(lp.top, outputs, strict=False):
            self.blobs[top] = v

    # ---- queries --------------------------------------------------------------------------
    def outputs(self) -> list[str]:
        """Blobs produced and never read afterwards: the net's outputs, in pycaffe's order."""
        read = {v for op in self.ops for v in op.inputs}
        return [n for n, v in self.blobs.items() if v not in read and v not in self.inputs.values()]

    def value_names(self) -> dict[int, str]:
        """The blob name of every value (in an in-place chain, each value has the chain's name)."""
        names = {v: n for n, v in self.inputs.items()}
        for op in self.ops:
            names.update(zip(op.outputs, op.tops, strict=False))
        return names

    def infer_shapes(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Shape of every blob for the given input shapes (no arithmetic: meta tensors)."""
        env = {self.inputs[n]: torch.empty(s, device="meta") for n, s in inputs.items()}
        with torch.inference_mode():
            for op in self.ops:
                outs = _meta_outputs(op.layer, [env[v] for v in op.inputs])
                env.update(zip(op.outputs, outs, strict=False))
        return {n: tuple(env[v].shape) for n, v in self.blobs.items() if v in env}

    def plan(self, outputs: tuple[str, ...], end: int | None = None) -> list[Op]:
        """The ops needed for ``outputs`` (blob names), in order; cached."""
        key = (outputs, end)
        if key not in self._plans:
            unknown = [n for n in outputs if n not in self.blobs]
            if unknown:
                raise SpecError(f"net {self.name!r} has no blob {unknown[0]!r}; blobs: "
                                f"{', '.join(list(self.blobs)[:20])}")
            needed = {self.blobs[n] for n in outputs}
            ops = self.ops if end is None else self.ops[:end]
            chosen = []
            for op in reversed(ops):
                if needed.intersection(op.outputs):
                    chosen.append(op)
                    needed.update(op.inputs)
            self._plans[key] = chosen[::-1]
        return self._plans[key]

    def run(self, feeds: dict[str, torch.Tensor], outputs: tuple[str, ...], *,
            values: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
        """Tensors for ``outputs`` given the input tensors; drops intermediates once unused.

        ``values`` optionally maps names to explicit value ids (pycaffe's ``forward(end=...)``).
        """
        targets = values or {n: self.blobs[n] for n in outputs}
        plan = self.plan(tuple(sorted(targets)), None) if values is None else self._plan_ids(
            set(targets.values()))
        env: dict[int, torch.Tensor] = {self.inputs[n]: t for n, t in feeds.items()}
        last = _last_use(plan, set(targets.values()))
        for i, op in enumerate(plan):
            outs = op.layer.fn([env[v] for v in op.inputs], op.layer.params)
            env.update(zip(op.outputs, outs, strict=False))
            for v in last.get(i, ()):
                env.pop(v, None)
        return {n: env[v] for n, v in targets.items()}

    def _plan_ids(self, needed: set[int]) -> list[Op]:
        chosen = []
        for op in reversed(self.ops):
            if needed.intersection(op.outputs):
                chosen.append(op)
                needed |= set(op.inputs)
        return chosen[::-1]

    # ---- rewriting ------------------------------------------------------------------------
    def to(self, device: str | torch.device, *, channels_last: bool = False) -> Graph:
        for op in self.ops:
            params = [p.to(device) for p in op.layer.params]
            if channels_last:
                params = [p.contiguous(memory_format=torch.channels_last) if p.dim() == 4 else p
                          for p in params]
            op.layer.params = params
            where = op.layer.attrs.get("device")
            if where is not None:  # a layer making tensors from nothing (DummyData)
                where["device"] = torch.device(device)
        self._plans.clear()
        return self

    def clone(self) -> Graph:
        """A copy with its own ops and layers over the same parameter tensors, for rewrites."""
        other = Graph(self.name)
        other.inputs, other.input_shapes = dict(self.inputs), dict(self.input_shapes)
        other.blobs, other.shapes = dict(self.blobs), dict(self.shapes)
        other.raw_params, other.force_backward = self.raw_params, self.force_backward
        other._count = self._count
        other.ops = [dataclasses.replace(
            op, inputs=list(op.inputs), outputs=list(op.outputs), tops=list(op.tops),
            layer=dataclasses.replace(op.layer, params=list(op.layer.params),
                                      attrs=dict(op.layer.attrs))) for op in self.ops]
        return other

    def fold(self, keep: tuple[str, ...], skip: frozenset[str] = frozenset()) -> int:
        """Fold BatchNorm / channel Scale into the convolution feeding them; returns how many.

        A fold is exact for inference and unobservable when the convolution's output value is read
        only by that BatchNorm/Scale and is not a requested blob (``keep``) or a net input.
        Layers named in ``skip`` take part in no fold.
        """
        protected = {self.blobs[n] for n in keep if n in self.blobs} | set(self.inputs.values())
        readers: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                readers.setdefault(v, []).append(op)
        folded = 0
        for op in list(self.ops):
            if op.layer.type != "Convolution" or op not in self.ops or op.layer.name in skip:
                continue
            while True:
                v = op.outputs[0]
                nxt = readers.get(v, [])
                if (v in protected or len(nxt) != 1 or not _foldable(nxt[0])
                        or nxt[0].layer.name in skip):
                    break
                _merge(op.layer, nxt[0].layer)
                op.outputs, op.tops = nxt[0].outputs, nxt[0].tops
                self.ops.remove(nxt[0])
                folded += 1
        self._plans.clear()
        return folded


def _foldable(op: Op) -> bool:
    layer = op.layer
    if layer.type == "BatchNorm":
        return bool(layer.attrs.get("global")) and len(op.inputs) == 1
    return layer.type == "Scale" and bool(layer.attrs.get("channelwise"))


def _merge(conv: L.Layer, after: L.Layer) -> None:
    """conv's weights and bias so that conv alone computes ``after(conv(x))`` (float64 maths)."""
    w = conv.params[0].double()
    b = conv.params[1].double() if len(conv.params) > 1 else torch.zeros(
        w.shape[0], dtype=torch.float64, device=w.device)
    if after.type == "BatchNorm":
        mean, var = (p.double() for p in after.params)
        scale = 1.0 / torch.sqrt(var + after.attrs["eps"])
        shift = -mean * scale
    else:
        scale = after.params[0].double().reshape(-1)
        shift = after.params[1].double().reshape(-1) if after.attrs["bias"] else torch.zeros_like(
            scale)
    dtype = conv.params[0].dtype
    conv.params = [(w * scale.view(-1, 1, 1, 1)).to(dtype), (b * scale + shift).to(dtype)]
    conv.attrs["folded"] = (*conv.attrs.get("folded", ()), after.name)


def _meta_shapes(layer: L.Layer, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    xs = [torch.empty(s, device="meta") for s in shapes]
    with torch.inference_mode():
        outs = _meta_outputs(layer, xs)
    return [tuple(o.shape) for o in outs]


def _meta_outputs(layer: L.Layer, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``layer``'s outputs on meta tensors (shapes only; a layer may say how via attrs["meta"])."""
    if "meta" in layer.attrs:
        return layer.attrs["meta"](xs)
    return layer.fn(xs, [p.to("meta") for p in layer.params])


def python_refused(lp: pb.LayerParameter) -> SpecError:
    """The one-line refusal for a Python layer when running user code was not allowed."""
    return SpecError(f"layer {lp.name!r} is a Python layer (module "
                     f"{lp.python_param.module!r}, class {lp.python_param.layer!r}): it runs "
                     "code from that module; pass --allow-python-layers to allow it")


def _last_use(plan: list[Op], keep: set[int]) -> dict[int, list[int]]:
    """For each step, the values no later step reads (so they can be freed after it)."""
    last: dict[int, int] = {}
    for i, op in enumerate(plan):
        for v in op.inputs:
            last[v] = i
    freed: dict[int, list[int]] = {}
    for v, i in last.items():
        if v not in keep:
            freed.setdefault(i, []).append(v)
    return freed


def _weights_by_layer(net: pb.NetParameter) -> dict[str, list[np.ndarray]]:
    return {lp.name: [blob_array(b, where=f"layer {lp.name!r}") for b in lp.blobs]
            for lp in net.layer if lp.blobs}
