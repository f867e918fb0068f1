"""The Model protocol: what a worker needs from any model, whatever framework runs it.

A model is built in the worker process that runs it (never pickled from the driver): `create` makes
it, `setup` loads weights onto the device once, `predict` maps one batch (a float32 numpy array in
the spec's layout, usually a view of a shared-memory slot) to named numpy arrays with one row per
input, and `teardown` frees it. `describe` runs in the driver before any process starts: it must be
cheap, must not need the device, and raises `SpecError` (one line) for a missing or broken model.

What a backend can do beyond that is declared, never guessed from its name: `capabilities(spec)`
returns a `Capabilities`, and the driver, the tuner and the runner read only that (so a new backend
touches `models/` alone).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import SpecError
from ..spec import ModelSpec, Preprocess

if TYPE_CHECKING:  # the driver reads the registry (models/__init__) before it imports numpy
    import numpy as np

    from .memo import Memo

# presets of the models that give none themselves; here, not in the torch backend, so the ONNX
# backend that uses one never imports torch
EFFICIENTNET_PRESET = Preprocess(resize=256, crop=(224, 224), mean=(127.5, 127.5, 127.5),
                                 std=(127.5, 127.5, 127.5), channel_order="RGB", layout="NCHW")
IMAGENET_PRESET = Preprocess(resize=256, crop=(224, 224), mean=(123.675, 116.28, 103.53),
                             std=(58.395, 57.12, 57.375), channel_order="RGB", layout="NCHW")


@dataclass(frozen=True)
class Capabilities:
    """What one model (of one backend) supports; the callers' only source for these decisions.

    ``precisions``: the ``--precision`` values it runs (others are refused in the driver).
    ``shared_weights``: the backend's ``share_weights(spec, folder, cache, keep)`` saves weights
    once for CPU workers to map, and ``create`` takes ``shared_weights=PATH``.
    ``pinned_input``: the model has ``pin_host(address, nbytes)`` to page-lock the slot ring.
    ``driver_model``: ``describe`` builds the model into the job's ``ModelCache`` and ``create``
    takes ``cache=`` to reuse it (calibration in the driver builds nothing twice).
    ``names``: ``predict`` takes ``names=`` (the batch's input names) as well as the array.
    ``preprocess``: ``create`` takes ``preprocess=`` (the job's resolved preprocessing).
    ``normalize``: the model honours ``ModelSpec.normalize`` (unit-vector embeddings).
    ``modalities``: the inputs it embeds (``image``, ``text``). With ``text``, ``describe`` and
    ``create`` take ``modality=``, and the backend has ``text_encoding(spec)``: the
    ``loader.text.TextEncoding`` its loaders tokenize with (``predict`` then takes int64 batches
    ``(n, 2, length)``: token ids and attention mask).
    """

    precisions: frozenset[str] = frozenset({"fp32"})
    shared_weights: bool = False
    pinned_input: bool = False
    driver_model: bool = False
    names: bool = False
    preprocess: bool = False
    normalize: bool = False
    modalities: frozenset[str] = frozenset({"image"})


FULL_PRECISION = Capabilities()


@dataclass(frozen=True)
class ModelInfo:
    """What the driver learns about a model before any worker starts.

    ``outputs`` are the names it can produce; when ``any_module_output`` is true (PyTorch modules),
    every name in ``outputs`` is valid and so is the ``output``/dict keys it lists first.
    """

    outputs: tuple[str, ...]
    default_outputs: tuple[str, ...]
    preset: Preprocess


class ModelCache:
    """Models the driver builds for one job, each built once: ``describe``, the shared weights
    file and calibration all need the same module (a ResNet-50 takes seconds to build). The job
    owns the cache and ``clear``s it when done, so the memory goes back.

    ``memo``: what earlier runs learned about a model (``memo.Memo``), so that ``describe``,
    ``capabilities`` and ``share_weights`` need neither the model nor its framework.
    """

    def __init__(self, memo: Memo | None = None) -> None:
        self._built: dict[Hashable, Any] = {}
        self.memo = memo

    def get(self, spec: ModelSpec, build: Callable[[ModelSpec], Any], *,
            key: Hashable = None) -> Any:
        """The model ``build(spec)`` made, built on first use; ``key`` tells apart two builds of
        one spec (an image and a text tower)."""
        if (spec, key) not in self._built:
            self._built[spec, key] = build(spec)
        return self._built[spec, key]

    def clear(self) -> None:
        self._built.clear()


@runtime_checkable
class Model(Protocol):
    """One loaded model in one worker process."""

    def setup(self) -> None:
        """Load weights onto the device; called once per worker."""

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for one batch, each an array whose first axis matches the batch (a model whose
        capabilities say ``names`` also takes ``names=``, the rows' input names)."""

    def teardown(self) -> None:
        """Free what setup took."""


class Backend(Protocol):
    """One family of models (torch, onnx, caffe, hf, callable classes): a module with these
    functions. ``create`` gets the keyword options its ``Capabilities`` declare (``precision``,
    ``shared_weights``, ``cache``, ``preprocess``, ``modality``) and no others."""

    def capabilities(self, spec: ModelSpec) -> Capabilities: ...

    def describe(self, spec: ModelSpec, cache: ModelCache | None = None,
                 **options: Any) -> ModelInfo: ...

    def create(
        self, spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
        **options: Any,
    ) -> Model: ...


def import_ref(ref: str) -> Any:
    """What ``package.module:attr`` names (None when the module has no ``attr``); a one-line
    SpecError when the module cannot be imported. Callers check what kind of object they got."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's model reference
        raise SpecError(f"model {ref}: cannot import {module_name}: {exc}") from None
    return getattr(module, attr, None)


def check_outputs(requested: tuple[str, ...], info: ModelInfo, ref: str) -> tuple[str, ...]:
    """The outputs to store: the requested ones if they all exist, else a one-line SpecError."""
    if not requested:
        return info.default_outputs
    unknown = [name for name in requested if name not in info.outputs]
    if unknown:
        shown = ", ".join(info.outputs[:12]) + (" ..." if len(info.outputs) > 12 else "")
        raise SpecError(f"model {ref} has no output {unknown[0]!r}; it has: {shown}")
    return requested
