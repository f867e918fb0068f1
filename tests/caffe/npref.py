"""Numpy references of Caffe's documented layer semantics (loops, written for clarity not speed)."""

from __future__ import annotations

import math

import numpy as np


def conv2d(x, w, b, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    n, _c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dil[0]: i * dil[0] + stride[0] * oh: stride[0],
                           j * dil[1]: j * dil[1] + stride[1] * ow: stride[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch,
                                                         w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def deconv2d(x, w, b, stride=(1, 1), pad=(0, 0)):
    """Transposed convolution, scatter form; w is (C_in, C_out, kh, kw), one group."""
    n, _c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((n, o, (h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw))
    for y in range(h):
        for xx in range(wd):
            full[:, :, y * stride[0]:y * stride[0] + kh, xx * stride[1]:xx * stride[1] + kw] += \
                np.einsum("nc,cokl->nokl", x[:, :, y, xx], w)
    out = full[:, :, pad[0]:full.shape[2] - pad[0], pad[1]:full.shape[3] - pad[1]]
    return (out + (0 if b is None else b.reshape(1, -1, 1, 1))).astype(np.float32)


def pool(x, method, k, s, p):
    """Caffe's pooling_layer.cpp arithmetic, ceil rounding."""
    n, c, h, w = x.shape
    sizes = []
    for size, kk, ss, pp in zip((h, w), k, s, p, strict=False):
        o = math.ceil((size + 2 * pp - kk) / ss) + 1
        if pp and (o - 1) * ss >= size + pp:
            o -= 1
        sizes.append(o)
    oh, ow = sizes
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = win.max((2, 3)) if method == "MAX" else win.sum((2, 3)) / area
    return out


def lrn_across(x, n, alpha, beta, k):
    c = x.shape[1]
    sq = np.pad(x ** 2, ((0, 0), ((n - 1) // 2, (n - 1) // 2), (0, 0), (0, 0)))
    scale = k + alpha / n * np.stack([sq[:, i:i + n].sum(1) for i in range(c)], 1)
    return x * scale ** -beta


def lrn_within(x, n, alpha, beta):
    p = (n - 1) // 2
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (p, p), (p, p)))
    h, w = x.shape[2:]
    s = np.zeros_like(x)
    for i in range(n):
        for j in range(n):
            s += sq[:, :, i:i + h, j:j + w]
    return x * (1 + alpha / n ** 2 * s) ** -beta


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)
