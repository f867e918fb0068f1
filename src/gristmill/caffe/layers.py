"""Caffe layers as PyTorch functions with Caffe's inference semantics.

Contract: ``build(layer, blobs, in_shapes)`` turns one V2 ``LayerParameter`` plus its weight arrays
and the shapes of its bottoms into a :class:`Layer`: ``fn(inputs, params) -> outputs`` (lists of
tensors; params passed in so the same function runs on meta tensors for shape inference, on folded
weights, and on any device). Weights whose shapes disagree with the prototxt and layer types we do
not run raise a one-line :class:`SpecError` naming the layer. Convolution-like layers that carry
spatial arithmetic (Pooling, LRN) live in ``layers_spatial.py``; this file holds the registry of
every builder (those of ``layers_extra.py`` and ``layers_fork.py`` too); what all the layer modules
share (``Layer``, ``check_blobs``...) is in ``layer_base.py``, so imports only go one way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError
from . import caffe_pb2 as pb
from .layer_base import Builder, Layer, Tensor, canonical_axis, check_blobs, check_group, unary
from .layers_extra import EXTRA
from .layers_fork import FORKS
from .layers_spatial import build_deconvolution, build_lrn, build_pooling, conv_geometry

__all__ = ["BUILDERS", "SOURCES", "SUPPORTED", "Layer", "build", "check_blobs", "unsupported"]

def build_convolution(lp, blobs, shapes):
    cp = lp.convolution_param
    g = conv_geometry(cp)
    c_in = shapes[0][1]
    group = check_group(lp, c_in)
    expected = [(cp.num_output, c_in // group, *g["kernel"])]
    expected += [(cp.num_output,)] if cp.bias_term else []
    params = check_blobs(lp, blobs, expected)
    stride, pad, dil = g["stride"], g["pad"], g["dilation"]

    def conv(xs, ps):
        return [F.conv2d(xs[0], ps[0], ps[1] if len(ps) > 1 else None, stride, pad, dil, group)]
    return Layer(lp.name, lp.type, conv, params, dict(g, group=group))


def build_inner_product(lp, blobs, shapes):
    ip = lp.inner_product_param
    axis = canonical_axis(ip.axis, len(shapes[0]))
    k = int(np.prod(shapes[0][axis:]))
    expected = [(k, ip.num_output) if ip.transpose else (ip.num_output, k)]
    expected += [(ip.num_output,)] if ip.bias_term else []
    params = check_blobs(lp, blobs, expected)
    transpose = ip.transpose

    def inner(xs, ps):
        x = xs[0].flatten(axis)
        w = ps[0].t() if transpose else ps[0]
        return [F.linear(x, w, ps[1] if len(ps) > 1 else None)]
    return Layer(lp.name, lp.type, inner, params)


def build_batch_norm(lp, blobs, shapes):
    bp = lp.batch_norm_param
    c = shapes[0][1]
    params = check_blobs(lp, blobs, [(c,), (c,), (1,)])
    eps = bp.eps
    # Caffe uses the stored statistics in TEST unless the prototxt says otherwise.
    global_stats = bp.use_global_stats if bp.HasField("use_global_stats") else True
    factor = float(params[2].reshape(-1)[0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    mean, var = params[0] * scale, params[1] * scale
    if global_stats:
        params = [mean, var]

    def bn(xs, ps):
        x = xs[0]
        view = (1, -1) + (1,) * (x.dim() - 2)
        if global_stats:
            m, v = ps[0], ps[1]
        else:
            dims = [d for d in range(x.dim()) if d != 1]
            m, v = x.mean(dims), x.var(dims, unbiased=False)
        return [(x - m.view(view)) / torch.sqrt(v.view(view) + eps)]
    return Layer(lp.name, lp.type, bn, params, {"eps": eps, "global": global_stats})


def _scale_shape(lp, shapes, axis_field, num_axes_field):
    x = shapes[0]
    axis = canonical_axis(axis_field, len(x))
    if len(shapes) > 1:
        return axis, tuple(shapes[1])
    end = len(x) if num_axes_field == -1 else axis + num_axes_field
    return axis, tuple(x[axis:end])


def _broadcast(t: Tensor, axis: int, ndim: int) -> Tensor:
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - t.dim()))


def build_scale(lp, blobs, shapes):
    sp = lp.scale_param
    axis, sshape = _scale_shape(lp, shapes, sp.axis, sp.num_axes)
    two = len(shapes) > 1
    expected = ([] if two else [sshape]) + ([sshape] if sp.bias_term else [])
    params = check_blobs(lp, blobs, expected)

    def scale(xs, ps):
        x = xs[0]
        s = xs[1] if two else ps[0]
        y = x * _broadcast(s, axis, x.dim())
        if sp.bias_term:
            y = y + _broadcast(ps[-1], axis, x.dim())
        return [y]
    return Layer(lp.name, lp.type, scale, params,
                 {"channelwise": not two and axis == 1 and len(sshape) == 1,
                  "bias": sp.bias_term})


def build_bias(lp, blobs, shapes):
    bp = lp.bias_param
    axis, sshape = _scale_shape(lp, shapes, bp.axis, bp.num_axes)
    two = len(shapes) > 1
    params = check_blobs(lp, blobs, [] if two else [sshape])

    def bias(xs, ps):
        b = xs[1] if two else ps[0]
        return [xs[0] + _broadcast(b, axis, xs[0].dim())]
    return Layer(lp.name, lp.type, bias, params)


def build_relu(lp, blobs, shapes):
    slope = lp.relu_param.negative_slope
    fn = F.relu if slope == 0 else (lambda x: F.leaky_relu(x, slope))
    return Layer(lp.name, lp.type, unary(fn), check_blobs(lp, blobs, []))


def build_prelu(lp, blobs, shapes):
    shared = lp.prelu_param.channel_shared
    params = check_blobs(lp, blobs, [(1,) if shared else (shapes[0][1],)])
    return Layer(lp.name, lp.type, lambda xs, ps: [F.prelu(xs[0], ps[0])], params)


def build_power(lp, blobs, shapes):
    p = lp.power_param
    power, scale, shift = p.power, p.scale, p.shift

    def fn(x):
        y = x * scale + shift if (scale != 1 or shift != 0) else x
        return y if power == 1 else torch.pow(y, power)
    return Layer(lp.name, lp.type, unary(fn), [])


def build_eltwise(lp, blobs, shapes):
    ep = lp.eltwise_param
    op = ep.operation
    coeff = list(ep.coeff) or [1.0] * len(shapes)
    if len(coeff) != len(shapes):
        raise SpecError(f"layer {lp.name!r} (Eltwise): {len(coeff)} coeff for "
                        f"{len(shapes)} bottoms")
    if op != pb.EltwiseParameter.SUM and ep.coeff:
        raise SpecError(f"layer {lp.name!r} (Eltwise): coeff is only valid for SUM")

    def eltwise(xs, ps):
        y = xs[0] * coeff[0] if coeff[0] != 1 else xs[0]
        for x, c in zip(xs[1:], coeff[1:], strict=False):
            if op == pb.EltwiseParameter.SUM:
                y = y + (x * c if c != 1 else x)
            elif op == pb.EltwiseParameter.PROD:
                y = y * x
            else:
                y = torch.maximum(y, x)
        return [y]
    return Layer(lp.name, lp.type, eltwise, [])


def build_concat(lp, blobs, shapes):
    cp = lp.concat_param
    axis = cp.axis if cp.HasField("axis") or not cp.HasField("concat_dim") else cp.concat_dim
    axis = canonical_axis(axis, len(shapes[0]))
    return Layer(lp.name, lp.type, lambda xs, ps: [torch.cat(xs, axis)], [])


def build_slice(lp, blobs, shapes):
    sp = lp.slice_param
    axis = sp.axis if sp.HasField("axis") or not sp.HasField("slice_dim") else sp.slice_dim
    axis = canonical_axis(axis, len(shapes[0]))
    n, tops = shapes[0][axis], len(lp.top)
    points = list(sp.slice_point)
    if points and len(points) != tops - 1:
        raise SpecError(f"layer {lp.name!r} (Slice): {len(points)} slice_point for {tops} tops")
    if not points:
        if n % tops:
            raise SpecError(f"layer {lp.name!r} (Slice): {n} does not split into {tops} tops")
        points = [n // tops * i for i in range(1, tops)]
    sizes = np.diff([0, *points, n]).tolist()
    if any(s <= 0 for s in sizes):
        raise SpecError(f"layer {lp.name!r} (Slice): slice_point {points} out of order for {n}")
    return Layer(lp.name, lp.type, lambda xs, ps: list(torch.split(xs[0], sizes, axis)), [])


def build_flatten(lp, blobs, shapes):
    fp = lp.flatten_param
    nd = len(shapes[0])
    start, end = canonical_axis(fp.axis, nd), canonical_axis(fp.end_axis, nd)
    return Layer(lp.name, lp.type, unary(lambda x: x.flatten(start, end)), [])


def build_reshape(lp, blobs, shapes):
    rp = lp.reshape_param
    dims = [int(d) for d in rp.shape.dim]
    nd = len(shapes[0])
    start = canonical_axis(rp.axis, nd + 1) if rp.axis < 0 else rp.axis
    end = nd if rp.num_axes == -1 else start + rp.num_axes

    def reshape(xs, ps):
        x = xs[0]
        # 0 copies the bottom's dimension at the same position; -1 is inferred by torch.
        mid = [x.shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
        return [x.reshape(*x.shape[:start], *mid, *x.shape[end:])]
    return Layer(lp.name, lp.type, reshape, [])


def build_softmax(lp, blobs, shapes):
    axis = canonical_axis(lp.softmax_param.axis, len(shapes[0]))
    return Layer(lp.name, lp.type, unary(lambda x: torch.softmax(x, axis)), [])


def build_crop(lp, blobs, shapes):
    cp = lp.crop_param
    nd = len(shapes[0])
    axis = canonical_axis(cp.axis, nd)
    offsets = list(cp.offset)
    if len(offsets) not in (0, 1, nd - axis):
        raise SpecError(f"layer {lp.name!r} (Crop): {len(offsets)} offsets for {nd - axis} axes")
    offsets = [offsets[0] if len(offsets) == 1 else offsets[i - axis] if offsets else 0
               for i in range(axis, nd)]

    def crop(xs, ps):
        x, ref = xs
        index = [slice(None)] * axis
        for i, off in zip(range(axis, nd), offsets, strict=False):
            index.append(slice(off, off + ref.shape[i]))
        return [x[tuple(index)]]
    for i, off in zip(range(axis, nd), offsets, strict=False):
        if off + shapes[1][i] > shapes[0][i]:
            raise SpecError(f"layer {lp.name!r} (Crop): offset {off} + size {shapes[1][i]} "
                            f"exceeds {shapes[0][i]} on axis {i}")
    return Layer(lp.name, lp.type, crop, [])


def _identity(lp, blobs, shapes):
    return Layer(lp.name, lp.type, lambda xs, ps: [xs[0]] * max(1, len(lp.top)), [])


def _simple(fn: Callable[[Tensor], Tensor]) -> Builder:
    return lambda lp, blobs, shapes: Layer(lp.name, lp.type, unary(fn), check_blobs(lp, blobs, []))


BUILDERS: dict[str, Builder] = {
    "Convolution": build_convolution,
    "Deconvolution": build_deconvolution,
    "InnerProduct": build_inner_product,
    "Pooling": build_pooling,
    "LRN": build_lrn,
    "ReLU": build_relu,
    "PReLU": build_prelu,
    "Sigmoid": _simple(torch.sigmoid),
    "TanH": _simple(torch.tanh),
    "ELU": lambda lp, b, s: Layer(lp.name, lp.type,
                                  unary(lambda x: F.elu(x, lp.elu_param.alpha)), []),
    "AbsVal": _simple(torch.abs),
    "Power": build_power,
    "BNLL": _simple(F.softplus),
    "Dropout": _identity,
    "Split": _identity,
    "BatchNorm": build_batch_norm,
    "Scale": build_scale,
    "Bias": build_bias,
    "Eltwise": build_eltwise,
    "Concat": build_concat,
    "Slice": build_slice,
    "Flatten": build_flatten,
    "Reshape": build_reshape,
    "Softmax": build_softmax,
    "Crop": build_crop,
}
BUILDERS.update(EXTRA)
BUILDERS.update(FORKS)
# Layers that make blobs from nothing (a net made only of these needs no Input).
SOURCES = ("Python", "DummyData", "Parameter")
SUPPORTED = ("Input", "Python", *BUILDERS)


def build(lp: pb.LayerParameter, blobs: list[np.ndarray], shapes: list[tuple[int, ...]]) -> Layer:
    """The executable form of ``lp``; SpecError (one line) for unsupported types or bad weights."""
    builder = BUILDERS.get(lp.type)
    if builder is None:
        raise unsupported(lp)
    return builder(lp, blobs, shapes)


def unsupported(lp: pb.LayerParameter) -> SpecError:
    return SpecError(f"layer {lp.name!r} has type {lp.type!r}, which gristmill does not run; "
                     f"supported: {', '.join(sorted(SUPPORTED))}")
