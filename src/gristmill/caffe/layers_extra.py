"""The rest of BVLC Caffe's layers a deploy net can hold, with upstream's semantics.

Contract: same builder signature as ``layers.py`` (``(lp, blobs, shapes) -> Layer``), registered in
its ``BUILDERS``. Each follows the upstream layer's forward pass, including its quirks: MVN adds
``eps`` to the standard deviation (not the variance), ArgMax without ``axis`` ranks each item's
flattened values, keeps the bottom's number of axes (at least 3) and with ``out_max_val`` returns
(index, value) pairs, Reduction reduces every axis from ``axis`` on (axis 0: a 0-d blob), Exp/Log
take ``base`` -1 as e. Parameter errors are one-line SpecErrors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError
from . import caffe_pb2 as pb
from .layer_base import Layer, canonical_axis, check_blobs, unary
from .layers_spatial import build_pooling, conv_geometry


def build_argmax(lp, blobs, shapes):
    ap = lp.argmax_param
    k, out_max = int(ap.top_k), ap.out_max_val
    has_axis = ap.HasField("axis")
    axis = canonical_axis(ap.axis, len(shapes[0])) if has_axis else None
    size = shapes[0][axis] if has_axis else int(np.prod(shapes[0][1:]))
    if k < 1 or k > size:
        raise SpecError(f"layer {lp.name!r} (ArgMax): top_k {k} must be in 1..{size}")

    def argmax(xs, ps):
        x = xs[0]
        if has_axis:
            values, index = torch.topk(x, k, dim=axis)
            return [values if out_max else index.to(x.dtype)]
        values, index = torch.topk(x.flatten(1), k, dim=1)
        # Caffe's top is (N, 2 with out_max_val (indices, then values) else 1, top_k), padded
        # with ones to the bottom's number of axes: (N, 1, top_k, 1) for a 4-D bottom.
        top = torch.stack([index.to(x.dtype), values], 1) if out_max else index.to(
            x.dtype).unsqueeze(1)
        return [top.reshape(*top.shape, *(1,) * (x.dim() - 3))]
    return Layer(lp.name, lp.type, argmax, [])


def build_threshold(lp, blobs, shapes):
    t = lp.threshold_param.threshold
    return Layer(lp.name, lp.type, unary(lambda x: (x > t).to(x.dtype)), [])


def _base_scale_shift(lp, p):
    if p.base != -1 and p.base <= 0:
        raise SpecError(f"layer {lp.name!r} ({lp.type}): base must be positive or -1 (e)")
    return (1.0 if p.base == -1 else math.log(p.base)), p.scale, p.shift


def build_exp(lp, blobs, shapes):
    log_base, scale, shift = _base_scale_shift(lp, lp.exp_param)
    # base ^ (shift + scale * x) = exp(ln(base) * (shift + scale * x))
    return Layer(lp.name, lp.type, unary(lambda x: torch.exp(log_base * (shift + scale * x))), [])


def build_log(lp, blobs, shapes):
    log_base, scale, shift = _base_scale_shift(lp, lp.log_param)
    return Layer(lp.name, lp.type, unary(lambda x: torch.log(shift + scale * x) / log_base), [])


def build_tile(lp, blobs, shapes):
    tp = lp.tile_param
    axis = canonical_axis(tp.axis, len(shapes[0]))
    if tp.tiles < 1:
        raise SpecError(f"layer {lp.name!r} (Tile): tiles must be >= 1, got {tp.tiles}")
    reps = [1] * len(shapes[0])
    reps[axis] = tp.tiles
    return Layer(lp.name, lp.type, unary(lambda x: x.repeat(*reps)), [])


def build_reduction(lp, blobs, shapes):
    rp = lp.reduction_param
    axis = canonical_axis(rp.axis, len(shapes[0]))
    op, coeff = rp.operation, rp.coeff
    R = pb.ReductionParameter

    def reduction(xs, ps):
        x = xs[0].flatten(axis) if axis < xs[0].dim() else xs[0].unsqueeze(-1)
        if op == R.ASUM:
            x = x.abs()
        elif op == R.SUMSQ:
            x = x * x
        y = x.mean(-1) if op == R.MEAN else x.sum(-1)
        return [y * coeff if coeff != 1 else y]
    return Layer(lp.name, lp.type, reduction, [])


def build_mvn(lp, blobs, shapes):
    mp = lp.mvn_param
    start = 1 if mp.across_channels else 2
    normalize, eps = mp.normalize_variance, mp.eps

    def mvn(xs, ps):
        x = xs[0]
        flat = x.flatten(start)
        centred = flat - flat.mean(-1, keepdim=True)
        if normalize:
            std = torch.sqrt((centred * centred).mean(-1, keepdim=True))
            centred = centred / (std + eps)
        return [centred.reshape(x.shape)]
    return Layer(lp.name, lp.type, mvn, [])


def build_embed(lp, blobs, shapes):
    ep = lp.embed_param
    expected = [(ep.input_dim, ep.num_output)] + ([(ep.num_output,)] if ep.bias_term else [])
    params = check_blobs(lp, blobs, expected)
    input_dim = ep.input_dim

    def embed(xs, ps):
        index = xs[0].long()
        if xs[0].device.type != "meta" and (index.min() < 0 or index.max() >= input_dim):
            raise ValueError(f"layer {lp.name!r} (Embed): an index is outside 0..{input_dim - 1}")
        y = F.embedding(index, ps[0])
        return [y + ps[1] if len(ps) > 1 else y]
    return Layer(lp.name, lp.type, embed, params)


def _spp_pooling(lp, level: int, h: int, w: int):
    bins = 2 ** level
    kh, kw = math.ceil(h / bins), math.ceil(w / bins)
    ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
    pool = pb.LayerParameter(name=f"{lp.name}_level{level}", type="Pooling")
    pool.pooling_param.pool = lp.spp_param.pool
    for field, value in (("kernel_h", kh), ("kernel_w", kw), ("stride_h", kh), ("stride_w", kw),
                         ("pad_h", ph), ("pad_w", pw)):
        setattr(pool.pooling_param, field, value)
    return build_pooling(pool, [], [(1, 1, h, w)]).fn


def build_spp(lp, blobs, shapes):
    height = lp.spp_param.pyramid_height
    if height < 1:
        raise SpecError(f"layer {lp.name!r} (SPP): pyramid_height must be >= 1")
    pools: dict[tuple[int, int], list] = {}

    def spp(xs, ps):
        x = xs[0]
        h, w = int(x.shape[2]), int(x.shape[3])
        if (h, w) not in pools:
            pools[(h, w)] = [_spp_pooling(lp, i, h, w) for i in range(height)]
        return [torch.cat([p([x], [])[0].flatten(1) for p in pools[(h, w)]], 1)]
    return Layer(lp.name, lp.type, spp, [])


def build_clip(lp, blobs, shapes):
    lo, hi = lp.clip_param.min, lp.clip_param.max
    if lo > hi:
        raise SpecError(f"layer {lp.name!r} (Clip): min {lo} > max {hi}")
    return Layer(lp.name, lp.type, unary(lambda x: torch.clamp(x, lo, hi)), [])


def build_swish(lp, blobs, shapes):
    beta = lp.swish_param.beta
    return Layer(lp.name, lp.type, unary(lambda x: x * torch.sigmoid(beta * x)), [])


def build_parameter(lp, blobs, shapes):
    shape = tuple(int(d) for d in lp.parameter_param.shape.dim)
    params = check_blobs(lp, blobs, [shape])
    return Layer(lp.name, lp.type, lambda xs, ps: [ps[0]], params)


def build_silence(lp, blobs, shapes):
    return Layer(lp.name, lp.type, lambda xs, ps: [], [])


def build_dummy_data(lp, blobs, shapes):
    dp = lp.dummy_data_param
    n = len(lp.top)
    if dp.shape:
        dims = [tuple(int(d) for d in s.dim) for s in dp.shape]
    else:
        dims = [tuple(int(getattr(dp, f)[i if len(getattr(dp, f)) > 1 else 0])
                      for f in ("num", "channels", "height", "width")) for i in range(n)]
    dims = dims * n if len(dims) == 1 else dims
    fillers = list(dp.data_filler) or [pb.FillerParameter()]
    fillers = fillers * n if len(fillers) == 1 else fillers
    if len(dims) != n or len(fillers) != n:
        raise SpecError(f"layer {lp.name!r} (DummyData): give one shape/filler or one per top")
    if any(f.type != "constant" for f in fillers):
        raise SpecError(f"layer {lp.name!r} (DummyData): only constant fillers are deterministic; "
                        "feed random data as an input instead")
    values = [f.value for f in fillers]
    # No bottom or weight says where the tops belong: Graph.to sets this (shared by clones)
    where = {"device": torch.device("cpu")}

    def dummy(xs, ps):
        return [torch.full(d, v, device=where["device"]) for d, v in zip(dims, values, strict=True)]

    def meta(xs):
        return [torch.empty(d, device="meta") for d in dims]
    return Layer(lp.name, lp.type, dummy, [], {"meta": meta, "device": where})


def build_im2col(lp, blobs, shapes):
    g = conv_geometry(lp.convolution_param)

    def im2col(xs, ps):
        x = xs[0]
        cols = F.unfold(x, g["kernel"], g["dilation"], g["pad"], g["stride"])
        kh, kw = g["kernel"]
        oh = (x.shape[2] + 2 * g["pad"][0] - (g["dilation"][0] * (kh - 1) + 1)) // g["stride"][0]
        ow = (x.shape[3] + 2 * g["pad"][1] - (g["dilation"][1] * (kw - 1) + 1)) // g["stride"][1]
        return [cols.reshape(x.shape[0], -1, oh + 1, ow + 1)]
    return Layer(lp.name, lp.type, im2col, [])


def build_batch_reindex(lp, blobs, shapes):
    return Layer(lp.name, lp.type, lambda xs, ps: [xs[0][xs[1].long()]], [])


EXTRA = {
    "ArgMax": build_argmax,
    "Threshold": build_threshold,
    "Exp": build_exp,
    "Log": build_log,
    "Tile": build_tile,
    "Reduction": build_reduction,
    "MVN": build_mvn,
    "Embed": build_embed,
    "SPP": build_spp,
    "Clip": build_clip,
    "Swish": build_swish,
    "Parameter": build_parameter,
    "Silence": build_silence,
    "DummyData": build_dummy_data,
    "Im2col": build_im2col,
    "BatchReindex": build_batch_reindex,
}
