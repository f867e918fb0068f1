"""Layers of the Caffe forks deployed models need, following their reference implementations.

Contract: same builder signature as ``layers.py``, registered in its ``BUILDERS``. SSD
(weiliu89/caffe): Normalize, Permute, PriorBox, DetectionOutput (``detection.py``); DeepLab:
Interp (bilinear, corners aligned, non-positive pads crop); SegNet: Upsample (scatter through the
MAX-pooling mask, Pooling's second top); Faster R-CNN: ROIPooling (Caffe's rounding of ROI
corners, empty bins give 0); ShuffleNet: ShuffleChannel. Parameter errors are one-line
SpecErrors naming the layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError
from .detection import build_detection_output
from .layer_base import Layer, check_blobs, unary


def build_normalize(lp, blobs, shapes):
    npm = lp.norm_param
    c = shapes[0][1]
    params = check_blobs(lp, blobs, [(1,) if npm.channel_shared else (c,)])
    across, eps = npm.across_spatial, npm.eps

    def normalize(xs, ps):
        x = xs[0]
        dims = tuple(range(1, x.dim())) if across else (1,)
        # sqrt(sum of squares + eps), as SSD's normalize_layer (eps inside the root)
        norm = torch.sqrt((x * x).sum(dims, keepdim=True) + eps)
        scale = ps[0].reshape((1, -1) + (1,) * (x.dim() - 2))
        return [x / norm * scale]
    return Layer(lp.name, lp.type, normalize, params)


def build_permute(lp, blobs, shapes):
    nd = len(shapes[0])
    order = [int(o) for o in lp.permute_param.order]
    if len(set(order)) != len(order) or any(o >= nd for o in order):
        raise SpecError(f"layer {lp.name!r} (Permute): order {order} is not a permutation of "
                        f"{nd} axes")
    order += [i for i in range(nd) if i not in order]  # unnamed axes keep their order
    return Layer(lp.name, lp.type, unary(lambda x: x.permute(*order).contiguous()), [])


def prior_boxes(pp, layer_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """SSD's prior boxes (2, H * W * priors * 4): corners in [0, 1], then the variances."""
    ratios = [1.0]
    for ar in pp.aspect_ratio:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if pp.flip:
            ratios.append(1.0 / ar)
    img_h = pp.img_h or pp.img_size or image_hw[0]
    img_w = pp.img_w or pp.img_size or image_hw[1]
    step_h = pp.step_h or pp.step or img_h / layer_hw[0]
    step_w = pp.step_w or pp.step or img_w / layer_hw[1]
    boxes = []
    for h in range(layer_hw[0]):
        for w in range(layer_hw[1]):
            cx, cy = (w + pp.offset) * step_w, (h + pp.offset) * step_h
            for s, min_size in enumerate(pp.min_size):
                sizes = [(min_size, min_size)]
                if pp.max_size:
                    side = math.sqrt(min_size * pp.max_size[s])
                    sizes.append((side, side))
                sizes += [(min_size * math.sqrt(r), min_size / math.sqrt(r))
                          for r in ratios if abs(r - 1.0) >= 1e-6]
                boxes += [((cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                           (cx + bw / 2) / img_w, (cy + bh / 2) / img_h) for bw, bh in sizes]
    corners = np.asarray(boxes, np.float32).reshape(-1)
    if pp.clip:
        corners = np.clip(corners, 0.0, 1.0)
    variance = list(pp.variance) or [0.1]
    var = np.resize(np.asarray(variance, np.float32), corners.shape)
    return np.stack([corners, var])[None]


def build_prior_box(lp, blobs, shapes):
    pp = lp.prior_box_param
    if not pp.min_size:
        raise SpecError(f"layer {lp.name!r} (PriorBox): give at least one min_size")
    if pp.max_size and len(pp.max_size) != len(pp.min_size):
        raise SpecError(f"layer {lp.name!r} (PriorBox): max_size needs one value per min_size")
    if len(pp.variance) not in (0, 1, 4):
        raise SpecError(f"layer {lp.name!r} (PriorBox): give 1 or 4 variances")
    cache: dict[tuple, torch.Tensor] = {}

    def prior_box(xs, ps):
        key = (tuple(xs[0].shape[2:]), tuple(xs[1].shape[2:]))
        if key not in cache:
            cache[key] = torch.from_numpy(prior_boxes(pp, key[0], key[1]))
        return [cache[key].to(xs[0].device)]

    def meta(xs):
        n = len(prior_boxes(pp, tuple(xs[0].shape[2:]), tuple(xs[1].shape[2:]))[0, 0])
        return [torch.empty((1, 2, n), device="meta")]
    return Layer(lp.name, lp.type, prior_box, [], {"meta": meta})


def interp_size(lp, h: int, w: int, ref: tuple[int, ...] | None) -> tuple[int, int, int, int]:
    """DeepLab's Interp: (cropped h, cropped w, out h, out w) for an input of h x w."""
    ip = lp.interp_param
    if ip.pad_beg > 0 or ip.pad_end > 0:
        raise SpecError(f"layer {lp.name!r} (Interp): only non-positive pads (cropping) exist")
    he, we = h + ip.pad_beg + ip.pad_end, w + ip.pad_beg + ip.pad_end
    zoom, shrink = ip.HasField("zoom_factor"), ip.HasField("shrink_factor")
    if shrink and not zoom:
        out = ((he - 1) // ip.shrink_factor + 1, (we - 1) // ip.shrink_factor + 1)
    elif zoom and not shrink:
        out = (he + (he - 1) * (ip.zoom_factor - 1), we + (we - 1) * (ip.zoom_factor - 1))
    elif ip.HasField("height") and ip.HasField("width"):
        out = (ip.height, ip.width)
    elif zoom and shrink:
        oh, ow = (he - 1) // ip.shrink_factor + 1, (we - 1) // ip.shrink_factor + 1
        out = (oh + (oh - 1) * (ip.zoom_factor - 1), ow + (ow - 1) * (ip.zoom_factor - 1))
    elif ref is not None:
        out = (int(ref[2]), int(ref[3]))
    else:
        raise SpecError(f"layer {lp.name!r} (Interp): give zoom_factor, shrink_factor, "
                        "height and width, or a second bottom")
    if min(he, we, *out) < 1:
        raise SpecError(f"layer {lp.name!r} (Interp): output {out} from input {(h, w)} is empty")
    return he, we, int(out[0]), int(out[1])


def build_interp(lp, blobs, shapes):
    interp_size(lp, shapes[0][2], shapes[0][3], shapes[1] if len(shapes) > 1 else None)
    beg = -lp.interp_param.pad_beg

    def interp(xs, ps):
        x = xs[0]
        he, we, oh, ow = interp_size(lp, x.shape[2], x.shape[3],
                                     tuple(xs[1].shape) if len(xs) > 1 else None)
        x = x[:, :, beg:beg + he, beg:beg + we]
        if (he, we) == (oh, ow):
            return [x.contiguous()]
        return [F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=True)]
    return Layer(lp.name, lp.type, interp, [])


def build_upsample(lp, blobs, shapes):
    up = lp.upsample_param
    if len(shapes) != 2:
        raise SpecError(f"layer {lp.name!r} (Upsample): needs the data and the pooling mask")
    sh = up.scale_h if up.HasField("scale_h") else up.scale
    sw = up.scale_w if up.HasField("scale_w") else up.scale

    def size(h: int, w: int) -> tuple[int, int]:
        oh = up.upsample_h if up.HasField("upsample_h") else h * sh - int(up.pad_out_h)
        ow = up.upsample_w if up.HasField("upsample_w") else w * sw - int(up.pad_out_w)
        return oh, ow

    def upsample(xs, ps):
        x, mask = xs
        n, c, h, w = x.shape
        oh, ow = size(h, w)
        if x.device.type == "meta":
            return [x.new_empty((n, c, oh, ow))]
        index = mask.reshape(n, c, -1).long()
        if index.numel() and (index.min() < 0 or index.max() >= oh * ow):
            raise ValueError(f"layer {lp.name!r} (Upsample): a mask index is outside {oh}x{ow}")
        out = x.new_zeros((n, c, oh * ow)).scatter_(2, index, x.reshape(n, c, -1))
        return [out.reshape(n, c, oh, ow)]
    return Layer(lp.name, lp.type, upsample, [])


def _round(v: float) -> int:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def build_roi_pooling(lp, blobs, shapes):
    rp = lp.roi_pooling_param
    ph_n, pw_n, scale = rp.pooled_h, rp.pooled_w, rp.spatial_scale
    if ph_n < 1 or pw_n < 1:
        raise SpecError(f"layer {lp.name!r} (ROIPooling): pooled_h and pooled_w must be >= 1")

    def roi_pool(xs, ps):
        x, rois = xs
        n_rois, c, h, w = rois.shape[0], x.shape[1], x.shape[2], x.shape[3]
        out = x.new_zeros((n_rois, c, ph_n, pw_n))
        if x.device.type == "meta":
            return [out]
        for r, roi in enumerate(rois.reshape(n_rois, -1).tolist()):
            b = int(roi[0])
            x1, y1, x2, y2 = (_round(v * scale) for v in roi[1:5])
            bin_h = max(y2 - y1 + 1, 1) / ph_n
            bin_w = max(x2 - x1 + 1, 1) / pw_n
            for i in range(ph_n):
                hs = min(max(math.floor(i * bin_h) + y1, 0), h)
                he = min(max(math.ceil((i + 1) * bin_h) + y1, 0), h)
                for j in range(pw_n):
                    ws = min(max(math.floor(j * bin_w) + x1, 0), w)
                    we = min(max(math.ceil((j + 1) * bin_w) + x1, 0), w)
                    if he > hs and we > ws:
                        out[r, :, i, j] = x[b, :, hs:he, ws:we].amax((1, 2))
        return [out]
    return Layer(lp.name, lp.type, roi_pool, [])


def build_shuffle_channel(lp, blobs, shapes):
    g = lp.shuffle_channel_param.group
    c = shapes[0][1]
    if g < 1 or c % g:
        raise SpecError(f"layer {lp.name!r} (ShuffleChannel): group {g} does not divide {c} "
                        "channels")

    def shuffle(xs, ps):
        x = xs[0]
        return [x.reshape(x.shape[0], g, -1, *x.shape[2:]).transpose(1, 2).reshape(x.shape)]
    return Layer(lp.name, lp.type, shuffle, [])


FORKS = {
    "Normalize": build_normalize,
    "Permute": build_permute,
    "PriorBox": build_prior_box,
    "DetectionOutput": build_detection_output,
    "Interp": build_interp,
    "Upsample": build_upsample,
    "ROIPooling": build_roi_pooling,
    "ShuffleChannel": build_shuffle_channel,
}
