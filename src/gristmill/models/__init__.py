"""Models: which backend runs a model reference, and the two calls every backend offers.

``describe(spec)`` (driver, cheap) and ``create(spec, outputs=, device=, threads=)`` (worker).
Backends are imported lazily so the driver and the loaders never pay for frameworks they do not use.
"""

from __future__ import annotations

import importlib
import os
from typing import Literal

from ..errors import SpecError
from ..spec import ModelSpec
from .base import Backend, Model, ModelCache, ModelInfo, check_outputs

ModelKind = Literal["builtin", "factory", "torchscript", "exported", "onnx", "caffe"]

BUILTIN = ("efficientnet-lite0",)

_BACKENDS: dict[ModelKind, str] = {
    "builtin": "gristmill.models.torch",
    "factory": "gristmill.models.torch",
    "torchscript": "gristmill.models.torch",
    "exported": "gristmill.models.torch",
    "onnx": "gristmill.models.onnx",
    "caffe": "gristmill.models.caffe",
}

_SUFFIXES: dict[str, ModelKind] = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".jit": "torchscript",
    ".pt2": "exported",
    ".prototxt": "caffe",
}


def kind_of(ref: str) -> ModelKind:
    """Which backend handles ``ref``; a one-line SpecError when none does."""
    if ref in BUILTIN:
        return "builtin"
    suffix = os.path.splitext(ref)[1].lower()
    if suffix in _SUFFIXES:
        if not os.path.exists(ref):
            raise SpecError(f"model file {ref} does not exist")
        if not os.path.isfile(ref):
            raise SpecError(f"model {ref} is not a file")
        return _SUFFIXES[suffix]
    if ":" in ref and not os.path.exists(ref):
        return "factory"
    if os.path.exists(ref):
        raise SpecError(
            f"model {ref}: unknown file type {suffix or '(none)'}; expected one of "
            f"{', '.join(sorted(_SUFFIXES))}"
        )
    raise SpecError(
        f"model {ref} not found: give a bundled name ({', '.join(BUILTIN)}), a model file, "
        "or package.module:factory"
    )


def backend(spec: ModelSpec) -> Backend:
    module = importlib.import_module(_BACKENDS[kind_of(spec.ref)])
    return module  # type: ignore[return-value]


def describe(spec: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    """What the model offers, found in the driver before any worker starts.

    ``cache`` keeps the module a PyTorch model was built into, for
    the driver's later steps (shared weights, calibration); other backends need none.
    """
    if cache is not None and _BACKENDS[kind_of(spec.ref)] == "gristmill.models.torch":
        return backend(spec).describe(spec, cache)  # type: ignore[call-arg]
    return backend(spec).describe(spec)


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           **options: object) -> Model:
    """Build the model in the process that will run it (call ``setup`` next).

    ``options`` (``precision``, ``shared_weights``) go only to backends that take them: the
    torch backend; others run as before (a non-default precision there is refused in the driver).
    """
    kind = kind_of(spec.ref)
    if _BACKENDS[kind] != "gristmill.models.torch":
        options = {}
    return backend(spec).create(spec, outputs=outputs, device=device, threads=threads,
                                **options)


def share_weights(spec: ModelSpec, folder: str, cache: ModelCache | None = None,
                  outputs: tuple[str, ...] = ()) -> str | None:
    """Driver: save the weights once for CPU workers to map (None when the backend cannot);
    ``outputs`` are the job's, whose modules the saved inference graph keeps as they are."""
    if _BACKENDS[kind_of(spec.ref)] != "gristmill.models.torch":
        return None
    from .torch import share_weights as save

    return save(spec, folder, cache, outputs)


__all__ = ["Model", "ModelCache", "ModelInfo", "check_outputs", "create", "describe", "kind_of",
           "share_weights"]
