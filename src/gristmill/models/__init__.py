"""Models: which backend runs a model reference, and the calls every backend offers.

``capabilities(spec)`` (what the backend can do), ``describe(spec, cache)`` (driver, cheap) and
``create(spec, outputs=, device=, threads=, ...)`` (worker). Callers decide by the capabilities,
never by the backend's name. Backends are imported lazily so the driver and the loaders never pay
for frameworks they do not use.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Literal

from ..errors import SpecError
from ..spec import ModelSpec, Preprocess
from .base import Backend, Capabilities, Model, ModelCache, ModelInfo, check_outputs, import_ref

if TYPE_CHECKING:
    from .memo import Memo

ModelKind = Literal["builtin", "factory", "callable", "hf", "torchscript", "exported", "onnx",
                    "caffe"]

BUILTIN = ("efficientnet-lite0",)
HF_PREFIX = "hf:"

_BACKENDS: dict[ModelKind, str] = {
    "builtin": "gristmill.models.torch",
    "factory": "gristmill.models.torch",
    "torchscript": "gristmill.models.torch",
    "exported": "gristmill.models.torch",
    "callable": "gristmill.models.classes",
    "hf": "gristmill.models.hf",
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


# What a worker imports before its first batch, per kind, for the local engine's fork server to
# import once for every worker (``engines/preload.py``): a framework only for its own jobs.
_WORKER_MODULES: dict[ModelKind, tuple[str, ...]] = {
    "builtin": ("torch", "gristmill.models.torch"),
    "factory": ("torch", "gristmill.models.torch"),
    "torchscript": ("torch", "gristmill.models.torch"),
    "exported": ("torch", "gristmill.models.torch"),
    "callable": ("gristmill.models.classes",),
    "hf": ("torch", "gristmill.models.hf"),
    "onnx": ("onnxruntime", "gristmill.models.onnx"),
    "caffe": ("torch", "gristmill.caffe.net", "gristmill.models.caffe"),
}


def worker_modules(ref: str) -> tuple[str, ...]:
    """The modules a worker running ``ref`` imports before its first batch (see above).

    Read from the reference's form alone: the driver asks before the model is checked, and
    importing ``package.module`` here to tell a factory from a plain class would hold up the fork
    server behind the user's own imports; such a reference gets the torch backend, which a factory
    needs (a plain class then only has torch preloaded for nothing).
    """
    if ref in BUILTIN:
        return _WORKER_MODULES["builtin"]
    if ref.startswith(HF_PREFIX):
        return _WORKER_MODULES["hf"]
    kind = _SUFFIXES.get(os.path.splitext(ref)[1].lower(), "factory")
    return _WORKER_MODULES[kind]


def kind_of(ref: str) -> ModelKind:
    """Which backend handles ``ref``; a one-line SpecError when none does."""
    if ref in BUILTIN:
        return "builtin"
    if ref.startswith(HF_PREFIX):
        return "hf"
    suffix = os.path.splitext(ref)[1].lower()
    if suffix in _SUFFIXES:
        if not os.path.exists(ref):
            raise SpecError(f"model file {ref} does not exist")
        if not os.path.isfile(ref):
            raise SpecError(f"model {ref} is not a file")
        return _SUFFIXES[suffix]
    if ":" in ref and not os.path.exists(ref):
        return "callable" if _is_plain_class(ref) else "factory"
    if os.path.exists(ref):
        raise SpecError(
            f"model {ref}: unknown file type {suffix or '(none)'}; expected one of "
            f"{', '.join(sorted(_SUFFIXES))}"
        )
    raise SpecError(
        f"model {ref} not found: give a bundled name ({', '.join(BUILTIN)}), a model file, "
        "hf:SNAPSHOT, package.module:factory or package.module:Class"
    )


def _is_plain_class(ref: str) -> bool:
    """``package.module:Class`` names a class that is not a ``torch.nn.Module`` (Ray Data's
    callable-class way); a function or a module class stays the torch factory path. An import
    failure is left to the torch backend, which reports it in one line."""
    try:
        target = import_ref(ref)
    except SpecError:
        return False
    if not isinstance(target, type):
        return False
    # A class whose module imported no torch cannot subclass nn.Module: torch stays unimported.
    torch = sys.modules.get("torch")
    return torch is None or not issubclass(target, torch.nn.Module)


def backend(spec: ModelSpec) -> Backend:
    module = importlib.import_module(_BACKENDS[kind_of(spec.ref)])
    return module  # type: ignore[return-value]


def capabilities(spec: ModelSpec, cache: ModelCache | None = None) -> Capabilities:
    """What the model's backend can do (precisions, shared weights, pinned input, modalities);
    from ``cache``'s memo when an earlier run kept them (the backend is not imported)."""
    memo = cache.memo if cache is not None else None
    kept = memo.capabilities(spec) if memo is not None else None
    if kept is not None:
        return kept
    found = backend(spec).capabilities(spec)
    if memo is not None:
        memo.learned(spec, capabilities=found)
    return found


def describe(spec: ModelSpec, cache: ModelCache | None = None,
             modality: str = "image") -> ModelInfo:
    """What the model offers, found in the driver before any worker starts.

    ``cache`` keeps the model a backend with ``driver_model`` built, for the driver's later steps
    (shared weights, calibration), and with a memo what an earlier run found (see ``memo``).
    ``modality`` other than ``image`` goes only to a backend that declares it
    (``Capabilities.modalities``).
    """
    memo = cache.memo if cache is not None else None
    kept = memo.description(spec, modality) if memo is not None else None
    if kept is not None:
        return kept
    if modality == "image":
        info = backend(spec).describe(spec, cache)
    else:
        _check_modality(spec, modality)
        info = backend(spec).describe(spec, cache, modality=modality)
    if memo is not None:
        memo.learned(spec, modality=modality, info=info,
                     capabilities=backend(spec).capabilities(spec))
    return info


def _check_modality(spec: ModelSpec, modality: str) -> None:
    have = capabilities(spec).modalities
    if modality not in have:
        raise SpecError(f"--modality {modality}: model {spec.ref} has no {modality} tower "
                        f"(it takes {', '.join(sorted(have))} inputs)")


def text_encoding(spec: ModelSpec) -> Any:
    """How the loaders tokenize captions for ``spec`` (a ``loader.text.TextEncoding``)."""
    _check_modality(spec, "text")
    return backend(spec).text_encoding(spec)  # type: ignore[attr-defined]


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           precision: str = "fp32", shared_weights: str | None = None,
           cache: ModelCache | None = None, preprocess: Preprocess | None = None,
           modality: str = "image") -> Model:
    """Build the model in the process that will run it (call ``setup`` next).

    Each option goes only to a backend whose capabilities declare it; a precision the backend
    lacks is refused in the driver (``job.resolve``), so here it is an error too.
    """
    caps = capabilities(spec)
    options: dict[str, Any] = {}
    if precision != "fp32":
        if precision not in caps.precisions:
            raise SpecError(f"--precision {precision}: model {spec.ref} runs only "
                            f"{', '.join(sorted(caps.precisions))}")
        options["precision"] = precision
    if shared_weights and caps.shared_weights:
        options["shared_weights"] = shared_weights
    if cache is not None and caps.driver_model:
        options["cache"] = cache
    if preprocess is not None and caps.preprocess:
        options["preprocess"] = preprocess
    if modality != "image":
        _check_modality(spec, modality)
        options["modality"] = modality
    return backend(spec).create(spec, outputs=outputs, device=device, threads=threads, **options)


def open_memo() -> Memo | None:
    """What earlier runs learned about models, for a driver's ``ModelCache`` (``memo``); None
    when the user turned it off."""
    from .memo import Memo, default_folder

    folder = default_folder()
    return Memo(folder) if folder else None


def share_weights(spec: ModelSpec, folder: str, cache: ModelCache | None = None,
                  outputs: tuple[str, ...] = ()) -> str | None:
    """Driver: save the weights once for CPU workers to map (None when the backend cannot);
    ``outputs`` are the job's, whose modules the saved inference graph keeps as they are. With a
    memo in ``cache`` the file an earlier run saved is linked (or copied) into ``folder``."""
    if not capabilities(spec, cache).shared_weights:
        return None
    memo = cache.memo if cache is not None else None
    kept = memo.weights(spec, outputs, folder) if memo is not None else None
    if kept is not None:
        return kept
    path = backend(spec).share_weights(spec, folder, cache, outputs)  # type: ignore[attr-defined]
    if memo is not None and path is not None:
        memo.learned(spec, outputs=outputs, weights=path)
    return path


__all__ = ["Capabilities", "Model", "ModelCache", "ModelInfo", "capabilities", "check_outputs",
           "create", "describe", "kind_of", "open_memo", "share_weights", "text_encoding",
           "worker_modules"]
