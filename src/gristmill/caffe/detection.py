"""SSD's DetectionOutput layer: decode the location predictions against the priors, per-class NMS,
keep_top_k over all classes, as weiliu89/caffe's detection_output_layer.

Contract: bottoms are loc (N, priors * L * 4 with L = 1 if share_location else num_classes), conf
(N, priors * num_classes) and priors (1, 2, priors * 4); the top is (1, 1, K, 7) rows of
``[image, label, score, xmin, ymin, xmax, ymax]``, grouped by image then label, or one
``[i, -1, ...]`` row per image when nothing passes. K depends on the data: shape inference reports
Caffe's own pre-forward shape (1, 1, 1, 7). ``split_by_image`` turns it into (N, keep_top_k, 7)
rows per image for gristmill's sinks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SpecError
from . import caffe_pb2 as pb
from .layer_base import Layer

CODE = pb.PriorBoxParameter


def decode(loc: np.ndarray, priors: np.ndarray, var: np.ndarray, code: int,
           encoded: bool) -> np.ndarray:
    """Boxes (P, 4) from predictions ``loc`` (P, 4), prior corners and variances (P, 4)."""
    v = np.ones_like(var) if encoded else var
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if code == CODE.CORNER:
        return priors + v * loc
    if code == CODE.CORNER_SIZE:
        return priors + v * loc * np.stack([pw, ph, pw, ph], 1)
    cx = v[:, 0] * loc[:, 0] * pw + (priors[:, 0] + priors[:, 2]) / 2
    cy = v[:, 1] * loc[:, 1] * ph + (priors[:, 1] + priors[:, 3]) / 2
    w, h = np.exp(v[:, 2] * loc[:, 2]) * pw, np.exp(v[:, 3] * loc[:, 3]) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """SSD's JaccardOverlap (normalised boxes: no +1), 0 for disjoint or degenerate boxes."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)

    def area(b):
        return np.where((b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1]), 0.0,
                        (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))
    union = area(box) + area(boxes) - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, nms_threshold: float,
        top_k: int, eta: float) -> list[int]:
    """SSD's ApplyNMSFast: indices kept, best score first."""
    order = np.flatnonzero(scores > threshold)
    order = order[np.argsort(-scores[order], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    adaptive = nms_threshold
    for idx in order:
        keep = not kept or bool(np.all(_iou(boxes[idx], boxes[kept]) <= adaptive))
        if keep:
            kept.append(int(idx))
            if eta < 1 and adaptive > 0.5:
                adaptive *= eta
    return kept


def detect(loc, conf, prior, *, num_classes: int, share: bool, background: int, code: int,
           encoded: bool, threshold: float, nms_threshold: float, top_k: int, eta: float,
           keep_top_k: int) -> np.ndarray:
    """The (K, 7) detections of a batch, in the layer's output order."""
    n = loc.shape[0]
    n_priors = prior.shape[-1] // 4
    priors, var = prior[0, 0].reshape(-1, 4), prior[0, 1].reshape(-1, 4)
    loc = loc.reshape(n, n_priors, 1 if share else num_classes, 4)
    conf = conf.reshape(n, n_priors, num_classes)
    rows = []
    for i in range(n):
        boxes = [decode(loc[i, :, c], priors, var, code, encoded) for c in range(loc.shape[2])]
        picked: list[tuple[int, int]] = []  # (label, prior index)
        for c in range(num_classes):
            if c == background:
                continue
            b = boxes[0 if share else c]
            picked += [(c, k) for k in nms(b, conf[i, :, c], threshold, nms_threshold, top_k,
                                           eta)]
        if keep_top_k > -1 and len(picked) > keep_top_k:
            scores = np.array([conf[i, k, c] for c, k in picked])
            best = np.argsort(-scores, kind="stable")[:keep_top_k]
            picked = [picked[j] for j in best]
            picked.sort(key=lambda lk: lk[0])  # grouped by label again, best first within one
        rows += [[i, c, conf[i, k, c], *boxes[0 if share else c][k]] for c, k in picked]
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(n)]
    return np.asarray(rows, np.float32).reshape(-1, 7)


def build_detection_output(lp, blobs, shapes):
    dp = lp.detection_output_param
    if dp.num_classes < 1:
        raise SpecError(f"layer {lp.name!r} (DetectionOutput): num_classes must be >= 1")
    if len(shapes) != 3:
        raise SpecError(f"layer {lp.name!r} (DetectionOutput): needs loc, conf and prior bottoms "
                        f"(the fork's ARM variants are not supported), got {len(shapes)}")
    nm = dp.nms_param
    kwargs = dict(num_classes=dp.num_classes, share=dp.share_location,
                  background=dp.background_label_id, code=dp.code_type,
                  encoded=dp.variance_encoded_in_target,
                  threshold=dp.confidence_threshold if dp.HasField("confidence_threshold")
                  else -float("inf"),
                  nms_threshold=nm.nms_threshold, top_k=nm.top_k if nm.HasField("top_k") else -1,
                  eta=nm.eta, keep_top_k=dp.keep_top_k)

    def detection_output(xs, ps):
        arrays = [x.detach().float().cpu().numpy() for x in xs]
        # huge predicted sizes overflow exp() to inf, as in Caffe; such boxes simply lose NMS
        with np.errstate(over="ignore", invalid="ignore"):
            out = detect(*arrays, **kwargs)
        return [torch.from_numpy(out).reshape(1, 1, -1, 7).to(xs[0].device)]

    def meta(xs):
        return [torch.empty((1, 1, 1, 7), device="meta")]
    return Layer(lp.name, lp.type, detection_output, [], {"meta": meta,
                                                          "keep_top_k": dp.keep_top_k})


def split_by_image(rows: np.ndarray, n: int, keep: int) -> np.ndarray:
    """(n, keep, 7): each image's rows (image column set to 0), padded with -1 rows."""
    out = np.full((n, keep, 7), -1.0, np.float32)
    rows = rows.reshape(-1, 7)
    for i in range(n):
        mine = rows[(rows[:, 0] == i) & (rows[:, 1] >= 0)][:keep]
        out[i, :len(mine)] = mine
        out[i, :len(mine), 0] = 0
    return out
