"""What every Caffe layer module shares: the :class:`Layer` they build and the checks they run.

Contract: layer modules (``layers.py``, ``layers_spatial.py``, ``layers_extra.py``,
``layers_fork.py``, ``detection.py``, ``pylayer.py``) import from here, and ``layers.py`` alone
imports them to assemble the registry (``BUILDERS``), so imports only go one way. Errors are
one-line :class:`SpecError`s naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import SpecError
from . import caffe_pb2 as pb

Tensor = torch.Tensor
Fn = Callable[[list[Tensor], list[Tensor]], list[Tensor]]


@dataclass(eq=False)
class Layer:
    """One executable layer: ``fn(inputs, params)``; ``attrs`` describe it for graph rewrites."""

    name: str
    type: str
    fn: Fn
    params: list[Tensor]
    attrs: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[pb.LayerParameter, list[np.ndarray], list[tuple[int, ...]]], Layer]


def check_blobs(layer: pb.LayerParameter, blobs: list[np.ndarray] | None,
                expected: list[tuple[int, ...]]) -> list[Tensor]:
    """The weights as tensors of the expected shapes; SpecError naming the layer otherwise.

    ``blobs`` None means "no weights file" (pycaffe allows it): zeros stand in. Legacy (V1) files
    store vectors and matrices as 4-D ``1 x 1 x H x W`` blobs, so shapes are compared with leading
    ones stripped, as Caffe itself accepts them. The tensors share memory with ``blobs``.
    """
    if blobs is None:
        return [torch.zeros(shape) for shape in expected]
    if len(blobs) != len(expected):
        raise SpecError(f"layer {layer.name!r} ({layer.type}): weights file has {len(blobs)} "
                        f"blobs, the prototxt needs {len(expected)} of shapes {expected}")
    out = []
    for i, (blob, shape) in enumerate(zip(blobs, expected, strict=False)):
        if _strip(blob.shape) != _strip(shape):
            raise SpecError(f"layer {layer.name!r} ({layer.type}): weight blob {i} has shape "
                            f"{tuple(blob.shape)}, the prototxt needs {tuple(shape)}")
        out.append(torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32).reshape(shape)))
    return out


def _strip(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def canonical_axis(axis: int, ndim: int) -> int:
    """A Caffe axis parameter (negative counts from the end) as an index into ``ndim`` axes."""
    return axis + ndim if axis < 0 else axis


def unary(fn: Callable[[Tensor], Tensor]) -> Fn:
    """The layer function applying ``fn`` to its one bottom."""
    return lambda xs, ps: [fn(xs[0])]


def check_group(lp: pb.LayerParameter, c_in: int) -> int:
    """``convolution_param.group`` of a (De)Convolution; SpecError unless it divides both the
    input and the output channels."""
    cp = lp.convolution_param
    if cp.group < 1 or c_in % cp.group or cp.num_output % cp.group:
        raise SpecError(f"layer {lp.name!r} ({lp.type}): group {cp.group} does not divide "
                        f"{c_in} input / {cp.num_output} output channels")
    return int(cp.group)
