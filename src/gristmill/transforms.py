"""Decode and preprocess one image straight into its row of a batch slot.

Runs in loader processes; imports neither torch nor any model code. The contract: ``load_into``
either fills ``out`` (one row of a shared-memory slot, float32, the spec's layout) or raises
``ItemError(stage, message)``; it never returns a half-written row as success.

Speed: JPEGs are decoded by libjpeg-turbo (simplejpeg) at the smallest 1/2, 1/4 or 1/8 DCT scale
that still covers the target (4-64x fewer pixels for photos much larger than the model input; the
result differs from a full decode followed by the same resize by under one grey level on average,
see tests/perf/test_reduced_decode.py). Resize and centre crop are one
PIL call (``resize(box=...)`` reads only the cropped region), and uint8 -> float normalisation is
one numpy pass that writes into the slot. Other formats, CMYK and progressive oddities go through
Pillow. EXIF orientation is applied (images come out upright), alpha is dropped, 16-bit images are
scaled to 8 bits, and an image with more pixels than ``max_pixels`` is refused before decoding.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from .errors import ItemError, first_line
from .sources.storage import read_object
from .spec import Preprocess

_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _exif_orientation(data: bytes) -> int:
    if data.find(b"Exif\0\0", 0, 65536) < 0:
        return 1
    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1))
    except Exception:
        return 1


def _min_decode_size(pre: Preprocess | Sequence[Preprocess], h: int,
                     w: int) -> tuple[int, int]:
    """The smallest (height, width) a reduced decode may produce and still cover the target (of
    every preprocessing, when several models take their input from one decode)."""
    if not isinstance(pre, Preprocess):
        sizes = [_min_decode_size(p, h, w) for p in pre]
        return max(s[0] for s in sizes), max(s[1] for s in sizes)
    if isinstance(pre.resize, int):
        scale = pre.resize / min(h, w)
        return max(1, int(h * scale)), max(1, int(w * scale))
    if isinstance(pre.resize, tuple):
        return pre.resize
    return pre.size


def _power_of_two_size(h: int, w: int, th: int, tw: int) -> tuple[int, int]:
    """The size of the smallest 1/2, 1/4 or 1/8 reduction still covering (th, tw), else (h, w).

    libjpeg also scales by 3/8, 5/8, 6/8, 7/8, but those differ visibly from a full decode and
    resize (measured: mean 3.6 grey levels for 500x375 -> 6/8), while 1/2^k stay under one.
    """
    for shift in (3, 2, 1):
        rh, rw = -(-h >> shift), -(-w >> shift)
        if rh >= th and rw >= tw:
            return rh, rw
    return h, w


def decode(data: bytes, pre: Preprocess | Sequence[Preprocess], max_pixels: int) -> np.ndarray:
    """An upright RGB uint8 array (H, W, 3), decoded no larger than the target needs (the
    largest target of several preprocessings)."""
    if data[:2] == b"\xff\xd8":
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except Exception:
            h = w = 0
        if h and w:
            if h * w > max_pixels:
                raise ItemError("decode", f"image too large ({w}x{h} pixels > {max_pixels})")
            orientation = _exif_orientation(data)
            th, tw = _min_decode_size(pre, *((w, h) if orientation in _TRANSPOSED else (h, w)))
            if orientation in _TRANSPOSED:
                th, tw = tw, th
            th, tw = _power_of_two_size(h, w, th, tw)
            try:
                rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=th,
                                             min_width=tw)
            except Exception:
                rgb = None  # CMYK, arithmetic coding...: Pillow below knows more
            if rgb is not None:
                return _orient(rgb, orientation) if orientation != 1 else rgb
    return _decode_pillow(data, pre, max_pixels)


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    img = Image.fromarray(rgb)
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return np.asarray(img.transpose(method)) if method is not None else rgb


def _decode_pillow(data: bytes, pre: Preprocess | Sequence[Preprocess],
                   max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ItemError("decode", f"image too large ({w}x{h} pixels > {max_pixels})")
            if img.format == "JPEG":
                th, tw = _min_decode_size(pre, h, w)
                img.draft("RGB", (tw, th))
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ItemError:
        raise
    except Image.DecompressionBombError as exc:
        raise ItemError("decode", f"image too large: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ItemError("decode", "not a recognised image format") from None
    except Exception as exc:
        message = first_line(exc)
        raise ItemError("decode", message) from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        arr = (arr >> 8).astype(np.uint8) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img)
    if img.mode in ("P", "PA") or img.mode.endswith("A"):
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"))


def _box(pre: Preprocess, h: int, w: int) -> tuple[tuple[float, float, float, float],
                                                   tuple[int, int]]:
    """Source box (l, t, r, b) and output (width, height) of resize-then-centre-crop."""
    if isinstance(pre.resize, int):
        scale = pre.resize / min(h, w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    elif isinstance(pre.resize, tuple):
        rh, rw = pre.resize
    else:
        rh, rw = h, w
    ch, cw = pre.crop if pre.crop is not None else (rh, rw)
    ch, cw = min(ch, rh), min(cw, rw)
    top, left = (rh - ch) // 2, (rw - cw) // 2
    sy, sx = h / rh, w / rw
    return (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy), (cw, ch)


def resize_crop(rgb: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resize (shorter side or exact) then centre-crop, in one resampling of the kept region."""
    h, w = rgb.shape[:2]
    box, size = _box(pre, h, w)
    if size == (w, h) and box == (0.0, 0.0, float(w), float(h)):
        out = rgb
    else:
        out = np.asarray(Image.fromarray(rgb).resize(size, _FILTERS[pre.resample or "bilinear"],
                                                      box=box))
    th, tw = pre.size
    if out.shape[:2] != (th, tw):  # crop larger than the resized image: pad with zeros
        padded = np.zeros((th, tw, 3), np.uint8)
        padded[:out.shape[0], :out.shape[1]] = out[:th, :tw]
        out = padded
    return out


def normalize_into(rgb: np.ndarray, out: np.ndarray, pre: Preprocess) -> None:
    """``out = (pixel - mean) / std`` in the spec's channel order and layout, one float pass."""
    if pre.channel_order == "BGR":
        rgb = rgb[:, :, ::-1]
    mean = np.asarray(pre.mean, np.float32)
    scale = 1.0 / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        np.subtract(rgb.transpose(2, 0, 1), mean[:, None, None], out=out, dtype=np.float32)
        np.multiply(out, scale[:, None, None], out=out)
    else:
        np.subtract(rgb, mean, out=out, dtype=np.float32)
        np.multiply(out, scale, out=out)


def load_into(path: bytes, out: np.ndarray, pre: Preprocess, max_pixels: int) -> None:
    """Read, decode and preprocess the image at ``path`` into ``out``; ItemError on failure."""
    decode_into(read_object(path), out, pre, max_pixels)


def decode_into(data: bytes, out: np.ndarray, pre: Preprocess, max_pixels: int) -> None:
    """Decode and preprocess encoded image ``data`` into ``out``; ItemError on failure."""
    rgb = decode(data, pre, max_pixels)
    try:
        normalize_into(resize_crop(rgb, pre), out, pre)
    except Exception as exc:
        raise ItemError("preprocess", str(exc) or type(exc).__name__) from None
