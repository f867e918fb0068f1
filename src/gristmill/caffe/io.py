"""pycaffe's ``caffe.io``: image loading and the ``Transformer`` that makes net inputs.

Contract: same names and array conventions as pycaffe (images are H x W x C float32 in [0, 1], RGB;
net inputs are C x H x W). ``resize_image`` is bilinear with half-pixel centres and no anti-aliasing
(pycaffe's scikit-image ``order=1`` on the [min, max]-normalised image), so results match pycaffe
closely but not bit for bit when shrinking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def load_image(filename: Any, color: bool = True) -> np.ndarray:
    """H x W x 3 (or x 1 when ``color`` is false) float32 image in [0, 1] from a path or file."""
    from PIL import Image

    with Image.open(filename) as im:
        im = im.convert("RGB" if color else "L")
        img = np.asarray(im, dtype=np.float32) / 255.0
    return img if img.ndim == 3 else img[:, :, np.newaxis]


def resize_image(im: np.ndarray, new_dims: tuple[int, int], interp_order: int = 1) -> np.ndarray:
    """``im`` (H x W x K) resized to ``new_dims`` (bilinear; nearest when ``interp_order`` is 0)."""
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[:2] == (h, w):
        return im.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)).permute(2, 0, 1)[None]
    mode = "nearest" if interp_order == 0 else "bilinear"
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(t, size=(h, w), mode=mode, **kwargs)
    return out[0].permute(1, 2, 0).numpy()


def oversample(images: list[np.ndarray], crop_dims: tuple[int, int]) -> np.ndarray:
    """Ten crops per image (4 corners + centre, and their mirrors), as in pycaffe."""
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    crops = []
    for im in images:
        h, w = im.shape[:2]
        starts = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw),
                  ((h - ch) // 2, (w - cw) // 2)]
        five = [im[y:y + ch, x:x + cw] for y, x in starts]
        crops += five + [c[:, ::-1] for c in five]
    return np.asarray(crops, dtype=np.float32)


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
        decaf_in = np.array(data, dtype=np.float32).squeeze()
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
