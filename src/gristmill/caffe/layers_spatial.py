"""Caffe's spatial layers (geometry of Convolution, Deconvolution, Pooling, LRN) on PyTorch.

Contract: same builder signature as ``layers.py``. The arithmetic follows Caffe, not PyTorch, where
they differ: pooling output sizes are ceil-rounded and the last window must start inside the image
(or the left padding); padded AVE pooling divides by the window clipped to ``H + pad``, counting
padding but not the ceil overhang; LRN within a channel ignores ``k``. PyTorch's own kernels are
used whenever they compute exactly that (they do for the usual ``pad <= kernel / 2``), else an
explicit padded form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError
from . import caffe_pb2 as pb
from .layer_base import Layer, check_blobs, check_group


def _pair(repeated, h, w, has_h: bool, default: int) -> tuple[int, int]:
    if has_h:
        return int(h), int(w)
    values = list(repeated)
    if not values:
        return default, default
    return (int(values[0]), int(values[-1])) if len(values) <= 2 else (-1, -1)


def conv_geometry(cp: pb.ConvolutionParameter) -> dict[str, tuple[int, int]]:
    """kernel / stride / pad / dilation as (h, w) pairs from the several ways Caffe spells them."""
    kernel = _pair(cp.kernel_size, cp.kernel_h, cp.kernel_w, cp.HasField("kernel_h"), 0)
    stride = _pair(cp.stride, cp.stride_h, cp.stride_w, cp.HasField("stride_h"), 1)
    pad = _pair(cp.pad, cp.pad_h, cp.pad_w, cp.HasField("pad_h") or cp.HasField("pad_w"), 0)
    dilation = _pair(cp.dilation, 0, 0, False, 1)
    if min(kernel) <= 0 or min(stride) <= 0 or min(pad) < 0 or min(dilation) <= 0:
        raise SpecError("only 2-D convolutions with positive kernel/stride/dilation are supported")
    return {"kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation}


def build_deconvolution(lp, blobs, shapes):
    cp = lp.convolution_param
    g = conv_geometry(cp)
    c_in = shapes[0][1]
    group = check_group(lp, c_in)
    # Caffe's deconvolution weights are (C_in, C_out / group, kh, kw): torch's layout as well.
    expected = [(c_in, cp.num_output // group, *g["kernel"])]
    expected += [(cp.num_output,)] if cp.bias_term else []
    params = check_blobs(lp, blobs, expected)
    stride, pad, dil = g["stride"], g["pad"], g["dilation"]

    def deconv(xs, ps):
        bias = ps[1] if len(ps) > 1 else None
        return [F.conv_transpose2d(xs[0], ps[0], bias, stride, pad, 0, group, dil)]
    return Layer(lp.name, lp.type, deconv, params)


def pool_geometry(pp: pb.PoolingParameter, h: int, w: int) -> dict[str, tuple[int, int]]:
    """kernel / stride / pad / output size, with Caffe's rounding rules."""
    if pp.global_pooling:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
    else:
        if pp.HasField("kernel_h") != pp.HasField("kernel_w") or not (
                pp.HasField("kernel_size") or pp.HasField("kernel_h")):
            raise SpecError("pooling needs kernel_size or kernel_h and kernel_w")
        kernel = ((pp.kernel_h, pp.kernel_w) if pp.HasField("kernel_h")
                  else (pp.kernel_size, pp.kernel_size))
        stride = ((pp.stride_h, pp.stride_w) if pp.HasField("stride_h")
                  else (pp.stride, pp.stride))
        pad = ((pp.pad_h, pp.pad_w) if pp.HasField("pad_h") or pp.HasField("pad_w")
               else (pp.pad, pp.pad))
    out = []
    for size, k, s, p in zip((h, w), kernel, stride, pad, strict=False):
        if pp.round_mode == pb.PoolingParameter.FLOOR:
            n = (size + 2 * p - k) // s + 1
        else:
            n = math.ceil((size + 2 * p - k) / s) + 1
            # The last window must start inside the image (or its left padding), else it is dropped.
            if any(pad) and (n - 1) * s >= size + p:
                n -= 1
        out.append(int(n))
    return {"kernel": kernel, "stride": stride, "pad": pad, "out": tuple(out)}


def _ave_divisor(size: int, k: int, s: int, p: int, n: int) -> np.ndarray:
    start = np.arange(n) * s - p
    return np.minimum(start + k, size + p) - start


def _pool_explicit(x, method, geo, h, w):
    """General path: pad explicitly so windows past the image are dropped the Caffe way."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geo["kernel"], geo["stride"], geo["pad"], geo["out"]
    extra_h = max(0, (oh - 1) * sh + kh - (h + ph))
    extra_w = max(0, (ow - 1) * sw + kw - (w + pw))
    if method == pb.PoolingParameter.MAX:
        xp = F.pad(x, (pw, extra_w, ph, extra_h), value=-math.inf)
        return F.max_pool2d(xp, (kh, kw), (sh, sw))[..., :oh, :ow]
    # Padding counts (zeros) but the overhang past H + pad does not: sum, then Caffe's divisor.
    xp = F.pad(x, (pw, extra_w, ph, extra_h))
    summed = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[..., :oh, :ow]
    div = np.outer(_ave_divisor(h, kh, sh, ph, oh), _ave_divisor(w, kw, sw, pw, ow))
    return summed / torch.as_tensor(div, dtype=x.dtype, device=x.device)


def build_pooling(lp, blobs, shapes):
    pp = lp.pooling_param
    check_blobs(lp, blobs, [])
    method = pp.pool
    if method not in (pb.PoolingParameter.MAX, pb.PoolingParameter.AVE):
        raise SpecError(f"layer {lp.name!r} (Pooling): only MAX and AVE pooling are supported")
    try:
        pool_geometry(pp, shapes[0][2], shapes[0][3])
    except SpecError as e:
        raise SpecError(f"layer {lp.name!r} (Pooling): {e}") from None
    if len(lp.top) > 1:
        if method != pb.PoolingParameter.MAX:
            raise SpecError(f"layer {lp.name!r} (Pooling): only MAX pooling has a mask top")
        return Layer(lp.name, lp.type, lambda xs, ps: list(_max_pool_mask(pp, xs[0])), [])

    def pool(xs, ps):
        x = xs[0]
        h, w = x.shape[-2], x.shape[-1]
        geo = pool_geometry(pp, h, w)
        k, s, p, out = geo["kernel"], geo["stride"], geo["pad"], geo["out"]
        ceil = pp.round_mode == pb.PoolingParameter.CEIL
        # PyTorch's ceil mode drops the same last window as Caffe when pad <= kernel / 2; its
        # count_include_pad divisor is Caffe's too. Check the size agrees before trusting it.
        fast = p[0] <= k[0] // 2 and p[1] <= k[1] // 2
        if fast and method == pb.PoolingParameter.MAX:
            y = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
        elif fast:
            y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=True)
        else:
            y = None
        if y is None or tuple(y.shape[-2:]) != out:
            y = _pool_explicit(x, method, geo, h, w)
        return [y]
    return Layer(lp.name, lp.type, pool, [])


def _max_pool_mask(pp, x):
    """MAX pooling and its mask top: the flat index ``h * W + w`` of each maximum in the input
    plane (SegNet's Upsample scatters through it)."""
    h, w = x.shape[-2], x.shape[-1]
    geo = pool_geometry(pp, h, w)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geo["kernel"], geo["stride"], geo["pad"], geo["out"]
    extra_h = max(0, (oh - 1) * sh + kh - (h + ph))
    extra_w = max(0, (ow - 1) * sw + kw - (w + pw))
    xp = F.pad(x, (pw, extra_w, ph, extra_h), value=-math.inf)
    y, index = F.max_pool2d(xp, (kh, kw), (sh, sw), return_indices=True)
    y, index = y[..., :oh, :ow], index[..., :oh, :ow]
    wp = w + pw + extra_w
    row, col = index // wp - ph, index % wp - pw  # back to unpadded input coordinates
    return y, (row * w + col).to(x.dtype)


def build_lrn(lp, blobs, shapes):
    rp = lp.lrn_param
    check_blobs(lp, blobs, [])
    n, alpha, beta, k = rp.local_size, rp.alpha, rp.beta, rp.k
    if n % 2 == 0:
        raise SpecError(f"layer {lp.name!r} (LRN): local_size must be odd, got {n}")

    if rp.norm_region == pb.LRNParameter.ACROSS_CHANNELS:
        # x / (k + alpha / n * sum over n channels of x^2) ^ beta, zero padded: torch's definition.
        def lrn(xs, ps):
            return [F.local_response_norm(xs[0], n, alpha, beta, k)]
    else:
        # Caffe builds this from AVE pooling (pad (n-1)/2, divisor always n^2) and Power(shift 1),
        # so k is not used: x / (1 + alpha / n^2 * sum over the n x n window of x^2) ^ beta.
        def lrn(xs, ps):
            x = xs[0]
            sq = F.avg_pool2d(x * x, n, 1, (n - 1) // 2, count_include_pad=True)
            return [x * torch.pow(1 + alpha * sq, -beta)]
    return Layer(lp.name, lp.type, lrn, [])
