"""pycaffe's ``caffe.io``: image loading and the ``Transformer`` that makes net inputs.

Contract: same names, array conventions and values as pycaffe (images are H x W x C float32 in
[0, 1], RGB; net inputs are C x H x W). pycaffe does its pixel work with scikit-image; the same
arithmetic is written here with numpy/torch (no scikit-image needed at run time), and
``tests/caffe/test_io.py`` holds it to scikit-image's own functions within 0.5 grey levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# scikit-image's rgb2gray weights (ITU-R BT.709 luma), which pycaffe's loader applies.
_LUMA = np.array([0.2125, 0.7154, 0.0721])


def load_image(filename: Any, color: bool = True) -> np.ndarray:
    """H x W x 3 (or x 1 when ``color`` is false) float32 image in [0, 1] from a path or file.

    pycaffe's ``skimage.img_as_float(skimage.io.imread(f, as_gray=not color))``: integer pixels
    are divided by their type's maximum, grey comes from scikit-image's luma weights, an RGBA
    image turned grey is first composited on white (``rgba2rgb``), in colour its alpha is dropped.
    """
    img = _as_float(_read_pixels(filename))
    if img.ndim == 3 and not color:
        if img.shape[2] == 4:
            img = img[:, :, 3:] * img[:, :, :3] + (1.0 - img[:, :, 3:])
            img = np.clip(img, 0.0, 1.0)
        img = img[:, :, :3] @ _LUMA
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _read_pixels(filename: Any) -> np.ndarray:
    """The file's pixels as imageio hands them to scikit-image: grey 2-D, else RGB or RGBA."""
    from PIL import Image

    with Image.open(filename) as im:
        if im.mode in ("L", "I", "I;16", "I;16B", "F", "1"):
            return np.asarray(im.convert("L") if im.mode == "1" else im)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))


def _as_float(img: np.ndarray) -> np.ndarray:
    """scikit-image's ``img_as_float``: unsigned ints to [0, 1], signed to [-1, 1], floats kept."""
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    if img.dtype == np.int32 and img.min() >= 0 and img.max() <= 65535:
        img = img.astype(np.uint16)  # PIL's 16-bit grey arrives as int32
    return img.astype(np.float64) / np.iinfo(img.dtype).max


def resize_image(im: np.ndarray, new_dims: tuple[int, int], interp_order: int = 1) -> np.ndarray:
    """``im`` (H x W x K) resized to ``new_dims``, with pycaffe's arithmetic.

    1 or 3 channels: scaled to [0, 1], scikit-image's ``resize(order=interp_order,
    mode="constant")`` (half-pixel centres, zeros past the edge, Gaussian anti-aliasing with sigma
    ``(factor - 1) / 2`` when shrinking), scaled back. Other channel counts: ``scipy.ndimage.zoom``
    (corner-aligned). Both are computed here with torch; the tests compare with scikit-image.
    """
    h, w = int(new_dims[0]), int(new_dims[1])
    im = np.asarray(im)
    if im.shape[-1] not in (1, 3):
        return _zoom(im, (h, w), interp_order)
    lo, hi = float(im.min()), float(im.max())
    if hi <= lo:  # a constant image: pycaffe fills rather than divide by zero
        return np.full((h, w, im.shape[-1]), lo, dtype=np.float32)
    std = (np.asarray(im, dtype=np.float64) - lo) / (hi - lo)
    factors = (im.shape[0] / h, im.shape[1] / w)
    std = _gaussian(std, [max(0.0, (f - 1) / 2) for f in factors])
    out = _sample(std, (h, w), interp_order)
    return (np.clip(out, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)


def _gaussian(img: np.ndarray, sigmas: list[float]) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, sigma, mode="constant")`` on the two image axes."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[:, None]  # K, 1, H, W
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        radius = int(4.0 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = (k / k.sum()).flip(0)
        shape = (1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1)
        pad = (radius, 0) if axis == 0 else (0, radius)
        t = F.conv2d(t, k.view(shape), padding=pad)
    return t[:, 0].permute(1, 2, 0).numpy()


def _sample(img: np.ndarray, dims: tuple[int, int], order: int) -> np.ndarray:
    """Half-pixel-centred resampling with zeros outside the image (scipy's grid-constant)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    # grid_sample's normalised coordinates with align_corners=False are exactly half-pixel ones.
    gy = (torch.arange(dims[0], dtype=torch.float64) + 0.5) / dims[0] * 2 - 1
    gx = (torch.arange(dims[1], dtype=torch.float64) + 0.5) / dims[1] * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    mode = "nearest" if order == 0 else "bilinear"
    out = F.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def _zoom(im: np.ndarray, dims: tuple[int, int], order: int) -> np.ndarray:
    """``scipy.ndimage.zoom`` (corner-aligned) on the first two axes: pycaffe for K not 1 or 3."""
    t = torch.from_numpy(np.ascontiguousarray(im, dtype=np.float64)).permute(2, 0, 1)[None]
    if order == 0:
        out = F.interpolate(t, size=dims, mode="nearest")
    else:
        out = F.interpolate(t, size=dims, mode="bilinear", align_corners=True)
    return out[0].permute(1, 2, 0).numpy().astype(np.float32)


def oversample(images: list[np.ndarray], crop_dims: tuple[int, int]) -> np.ndarray:
    """Ten crops per image (4 corners + centre, then the same mirrored), pycaffe's indices."""
    im_shape = np.array(images[0].shape)
    crop = np.array(crop_dims)
    centre = im_shape[:2] / 2.0
    boxes = [(i, j, i + crop[0], j + crop[1]) for i in (0, im_shape[0] - crop[0])
             for j in (0, im_shape[1] - crop[1])]
    # pycaffe stores the float centre box in an int array: the coordinates are truncated.
    boxes.append(tuple(int(v) for v in np.concatenate([centre - crop / 2.0, centre + crop / 2.0])))
    crops = np.empty((10 * len(images), crop[0], crop[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for y0, x0, y1, x1 in boxes + boxes:
            crops[ix] = im[y0:y1, x0:x1, :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :].copy()
    return crops


class Transformer:
    """Turns images into net inputs (``preprocess``) and back (``deprocess``), per input name.

    Order of ``preprocess``, as pycaffe: resize to the input's H x W, transpose, channel swap,
    raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs: dict[str, tuple[int, ...]]) -> None:
        self.inputs = inputs
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def __check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self.__check_input(in_)
        caffe_in = data.astype(np.float32, copy=False)
        in_dims = tuple(self.inputs[in_][2:])
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        caffe_in = np.array(caffe_in, dtype=np.float32)  # own copy: the steps below are in place
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self.__check_input(in_)
        decaf_in = np.array(data).squeeze()
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_: str, order: tuple[int, ...]) -> None:
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of dimensions as the "
                            "input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: tuple[int, ...]) -> None:
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of dimensions as the "
                            "input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Per-channel (C,) or full (C, H, W) mean, in the net's channel order."""
        self.__check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        elif len(ms) == 2:
            ms = (1, *ms)
        if len(ms) == 3 and ms != tuple(self.inputs[in_][1:]):
            raise ValueError(f"Mean shape {ms} incompatible with input shape {self.inputs[in_]}.")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        self.__check_input(in_)
        self.input_scale[in_] = scale
