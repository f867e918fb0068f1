"""Training augmentation, run inside loader processes: random resized crop, horizontal flip, a hook.

Contract: ``TrainFill`` fills one row of a slot from an image file, like ``ImageFill`` does for
inference, or raises ``ItemError``. Its randomness comes only from ``item_rng(task.seed, index)``
where ``index`` is the sample's index in the dataset and ``task.seed`` names (seed, epoch), so the
same sample in the same epoch always gives the same pixels, whichever process makes it and however
often. Never imports torch.

Speed: the crop box is drawn from the image size in the JPEG header, *before* decoding, so the JPEG
is decoded at the smallest DCT scale (1/2, 1/4, 1/8) at which the box still has at least the output
resolution; the resize then reads only the box. A 1920x1080 photo cropped to 224x224 is mostly
decoded at a quarter of its pixels. The result differs from a full decode by resampling noise only.
The crop parameters follow torchvision's ``RandomResizedCrop.get_params``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from ..spec import Preprocess
from .messages import BatchTask
from .order import item_rng

_FULL = Preprocess(resize=(1 << 30, 1 << 30))  # asks decode() for full resolution

Hook = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Augment:
    """Random resized crop + horizontal flip (+ an optional hook), made in the loader processes.

    ``size`` is the output (height, width) (None: the preprocess size); ``scale`` the range of the
    crop's area as a fraction of the image, ``ratio`` of its aspect (width / height), as in
    torchvision. ``crop=False`` resizes the whole image instead. ``flip`` is the probability of a
    horizontal flip. ``hook(rgb, rng)``, if given, takes and returns the cropped uint8 (H, W, 3)
    image (e.g. colour jitter); it must be picklable (a module-level function) and draw only from
    ``rng`` to stay deterministic.

    Example::

        Augment(size=(224, 224), scale=(0.08, 1.0), flip=0.5)
    """

    size: tuple[int, int] | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop: bool = True
    flip: float = 0.5
    hook: Hook | None = None

    def box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in an upright h x w image."""
        if not self.crop:
            return 0, 0, h, w
        area = h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
        in_ratio = w / h  # fallback, as torchvision: the largest centred box within the ratios
        if in_ratio < min(self.ratio):
            cw, ch = w, round(w / min(self.ratio))
        elif in_ratio > max(self.ratio):
            ch, cw = h, round(h * max(self.ratio))
        else:
            ch, cw = h, w
        return (h - ch) // 2, (w - cw) // 2, ch, cw


def _upright_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) after EXIF orientation, from a JPEG header; None for other formats."""
    from ..transforms import _TRANSPOSED, _exif_orientation

    if data[:2] != b"\xff\xd8":
        return None
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except Exception:
        return None
    return (w, h) if _exif_orientation(data) in _TRANSPOSED else (h, w)


@dataclass(frozen=True)
class TrainFill:
    """Fill a uint8 row with an augmented image (``augment``) or the preprocess's resize and
    centre crop (None); normalisation is left to the consumer."""

    preprocess: Preprocess
    augment: Augment | None
    max_pixels: int

    def __call__(self, path: bytes, row: np.ndarray, task: BatchTask, index: int) -> None:
        from ..errors import ItemError
        from ..sources.storage import read_object
        from ..transforms import decode, resize_crop

        data = read_object(path)
        if self.augment is None:
            rgb = decode(data, self.preprocess, self.max_pixels)
            try:
                write_uint8(resize_crop(rgb, self.preprocess), row, self.preprocess)
            except Exception as exc:
                raise ItemError("preprocess", f"{type(exc).__name__}: {exc}") from None
            return
        rng = item_rng(task.seed, task.indices[index])
        oh, ow = self.augment.size or self.preprocess.size
        upright = _upright_size(data)
        if upright is None:  # not a JPEG: no reduced decode, the box is drawn after decoding
            rgb = decode(data, _FULL, self.max_pixels)
            upright = rgb.shape[:2]
            top, left, ch, cw = self.augment.box(*upright, rng)
        else:
            top, left, ch, cw = self.augment.box(*upright, rng)
            s = min(1.0, max(oh / ch, ow / cw))  # the box must keep >= output resolution
            need = (math.ceil(upright[0] * s), math.ceil(upright[1] * s))
            rgb = decode(data, Preprocess(resize=need), self.max_pixels)
        try:
            sy, sx = rgb.shape[0] / upright[0], rgb.shape[1] / upright[1]
            box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
            out = Image.fromarray(rgb).resize((ow, oh), Image.Resampling.BILINEAR, box=box)
            if rng.random() < self.augment.flip:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            pixels = np.asarray(out)
            if self.augment.hook is not None:
                pixels = self.augment.hook(pixels, rng)
            write_uint8(pixels, row, self.preprocess)
        except Exception as exc:
            raise ItemError("augment", f"{type(exc).__name__}: {exc}") from None


def write_uint8(rgb: np.ndarray, row: np.ndarray, pre: Preprocess) -> None:
    """Copy an RGB uint8 (H, W, 3) image into a uint8 slot row in the spec's channel order and
    layout. Slots hold uint8, not float: 4x less shared memory and loader work; the consumer
    normalises while it copies the batch out (``normalize_batch``), which it does anyway."""
    if pre.channel_order == "BGR":
        rgb = rgb[:, :, ::-1]
    row[...] = rgb.transpose(2, 0, 1) if pre.layout == "NCHW" else rgb
