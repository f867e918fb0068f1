"""Callable classes, Ray Data's way: ``--model package.module:Class`` runs any framework.

``Class()`` is built once per worker (it loads whatever it likes: scikit-learn, OpenVINO, JAX, a
hand-written pipeline) and ``instance(batch)`` maps a batch dict to named outputs::

    class Brightness:
        preprocess = Preprocess(resize=(64, 64), layout="NHWC")   # optional; default below
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"mean": batch["image"].mean(axis=(1, 2, 3))}

The batch holds ``"image"`` (N rows in the job's layout: ``uint8`` pixels when the preprocessing
does no normalisation, i.e. mean 0 and std 1, else ``float32`` normalised values) and ``"name"``
(the N inputs' names, a ``str`` array). Every output must be an array with N rows.

The preset is the class's ``preprocess`` attribute (a ``Preprocess``, fields left None come from
the default: resize 256, centre crop 224x224, RGB, NHWC, no normalisation); the usual flags
override it. The output names are the class's ``outputs`` attribute if it has one, else ``describe``
builds one instance in the driver and calls it on one blank image (kept in the job's model cache
for calibration, so the class is built once in the driver).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import SpecError, first_line
from ..spec import ModelSpec, Preprocess
from .base import Capabilities, ModelCache, ModelInfo, import_ref

DEFAULT_PRESET = Preprocess(resize=256, crop=(224, 224), mean=(0.0, 0.0, 0.0),
                            std=(1.0, 1.0, 1.0), channel_order="RGB", layout="NHWC")
CAPABILITIES = Capabilities(driver_model=True, names=True, preprocess=True)


def capabilities(spec: ModelSpec) -> Capabilities:
    return CAPABILITIES


def load_class(ref: str) -> type:
    """The class ``package.module:Class`` names; a one-line SpecError if it cannot be imported."""
    cls = import_ref(ref)
    if not isinstance(cls, type) or not any("__call__" in vars(k) for k in cls.__mro__):
        raise SpecError(f"model {ref}: {ref.replace(':', '.', 1)} is not a callable class")
    return cls


def instantiate(spec: ModelSpec) -> Any:
    if spec.weights:
        raise SpecError(f"model {spec.ref}: a callable class loads its own weights "
                        "(drop --weights)")
    cls = load_class(spec.ref)
    try:
        return cls()
    except Exception as exc:
        first = first_line(exc)
        raise SpecError(f"model {spec.ref}: {cls.__name__}() failed: {first}") from None


def preset(cls: type) -> Preprocess:
    own = getattr(cls, "preprocess", None)
    if own is None:
        return DEFAULT_PRESET
    if isinstance(own, dict):
        own = Preprocess(**own)
    if not isinstance(own, Preprocess):
        raise SpecError(f"{cls.__name__}.preprocess must be a gristmill Preprocess or a dict")
    if own.resize is not None and own.crop is None:  # its own size: not cropped to the default
        return own.over(replace(DEFAULT_PRESET, crop=None))
    return own.over(DEFAULT_PRESET)


def as_pixels(pre: Preprocess) -> bool:
    """True when rows are raw pixels (no normalisation): the class then gets uint8."""
    mean, std = tuple(pre.mean or (0.0,) * 3), tuple(pre.std or (1.0,) * 3)
    return mean == (0.0,) * 3 and std == (1.0,) * 3


def call(instance: Any, image: np.ndarray, names: list[str], ref: str, *,
         key: str = "image") -> dict[str, np.ndarray]:
    """``instance({key: rows, "name": names})`` with its outputs checked: a dict of N-row
    arrays (``key`` is ``image`` for pixels, ``input`` for a head's rows)."""
    result = instance({key: image, "name": np.array(names, dtype=str)})
    if not isinstance(result, dict):
        raise TypeError(f"model {ref} returned {type(result).__name__}, not a dict of arrays")
    out = {}
    for name, value in result.items():
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != len(image):
            raise ValueError(f"model {ref}: output {name!r} has shape {array.shape}, "
                             f"expected {len(image)} rows")
        out[str(name)] = array
    return out


def describe(spec: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    cls = load_class(spec.ref)
    pre = preset(cls).complete()
    declared = getattr(cls, "outputs", None)
    if declared:
        names = tuple(str(n) for n in declared)
    else:
        instance = cache.get(spec, instantiate) if cache is not None else instantiate(spec)
        blank = np.zeros((1, *pre.item_shape()), np.uint8 if as_pixels(pre) else np.float32)
        try:
            names = tuple(call(instance, blank, ["probe"], spec.ref))
        except Exception as exc:
            first = first_line(exc)
            raise SpecError(f"model {spec.ref} fails on a blank {pre.size[0]}x{pre.size[1]} "
                            f"image: {first}") from None
    if not names:
        raise SpecError(f"model {spec.ref} returns no outputs")
    return ModelInfo(outputs=names, default_outputs=names, preset=preset(cls))


@dataclass
class ClassModel:
    """One instance of the user's class in one worker."""

    spec: ModelSpec
    outputs: tuple[str, ...]
    pixels: bool
    instance: Any = None
    key: str = "image"  # what the rows are to the class: pixels, or a head's ``input`` rows

    def setup(self) -> None:
        if self.instance is None:
            self.instance = instantiate(self.spec)

    def predict(self, batch: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        # rows of raw pixels are whole numbers 0..255 in float32: the cast is exact
        image = batch.astype(np.uint8) if self.pixels else batch
        found = call(self.instance, image, names if names is not None else [""] * len(batch),
                     self.spec.ref, key=self.key)
        missing = [n for n in self.outputs if n not in found]
        if missing:
            raise KeyError(f"model {self.spec.ref} did not return {missing[0]!r}")
        return {n: found[n] for n in self.outputs}

    def teardown(self) -> None:
        self.instance = None


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           preprocess: Preprocess | None = None, cache: ModelCache | None = None) -> ClassModel:
    """``preprocess``: the job's, which decides uint8 or float rows; ``cache``: the driver's
    instance (calibration)."""
    pre = preprocess or preset(load_class(spec.ref))
    instance = cache.get(spec, instantiate) if cache is not None else None
    return ClassModel(spec, outputs, as_pixels(pre), instance)
