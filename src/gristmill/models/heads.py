"""Heads: models fed another model's output rows instead of pixels (``--model NAME=REF@A/OUT``).

A head is an aesthetic score on a CLIP embedding, a linear probe, an NSFW classifier on
embeddings: small, run in the worker right after the model it reads, with no decode. Kinds:

- a callable class (``package.module:Class``): ``instance({"input": array (n, ...), "name": str
  array})`` returns a dict of arrays with n rows (its ``outputs`` attribute names them, else one
  call on a zero row in the driver does);
- a PyTorch module (a factory, TorchScript ``.pt``, exported ``.pt2``): ``module(tensor)``, outputs
  named as for any torch model (``output``, dict keys, submodules by name);
- an ONNX model: its first input gets the array.

``describe`` needs the shape of one input row (the driver finds it by running the input model on
a zero image): the heads' output names are found on a zero row of that shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SpecError, first_line
from ..spec import ModelSpec
from . import kind_of
from .base import Capabilities, ModelCache

HEAD_KINDS = ("callable", "factory", "torchscript", "exported", "onnx")
CLASS_CAPABILITIES = Capabilities(names=True)


def check_kind(spec: ModelSpec) -> str:
    kind = kind_of(spec.ref)
    if kind not in HEAD_KINDS:
        raise SpecError(f"model {spec.name}={spec.ref}@{spec.input}: a head is a callable class, "
                        "a torch module (package.module:factory, .pt, .pt2) or an .onnx model")
    return kind


def capabilities(spec: ModelSpec) -> Capabilities:
    if check_kind(spec) == "callable":
        return CLASS_CAPABILITIES
    from . import capabilities as backend_capabilities

    return backend_capabilities(spec)


def describe(spec: ModelSpec, row_shape: tuple[int, ...],
             cache: ModelCache | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every output name, the default outputs) of the head on rows of ``row_shape``."""
    kind = check_kind(spec)
    zero = np.zeros((1, *row_shape), np.float32)
    where = f"model {spec.name} ({spec.ref}) on a row of {spec.input} {tuple(row_shape)}"
    if kind == "onnx":
        from . import onnx

        names = onnx.describe(spec).outputs
        return names, names
    if kind == "callable":
        from .classes import load_class

        declared = getattr(load_class(spec.ref), "outputs", None)
        if declared:
            names = tuple(str(n) for n in declared)
            return names, names
        try:
            instance = _instance(spec, cache)
            names = tuple(call(instance, zero, ["probe"], spec.ref))
        except SpecError:
            raise
        except Exception as exc:
            raise SpecError(f"{where} fails: {first_line(exc)}") from None
        if not names:
            raise SpecError(f"model {spec.name} ({spec.ref}) returns no outputs")
        return names, names
    import torch

    from .torch import _submodule_names, build_module, flatten_outputs

    module = cache.get(spec, build_module) if cache is not None else build_module(spec)
    try:
        with torch.inference_mode():
            top = tuple(flatten_outputs(module(torch.from_numpy(zero))))
    except Exception as exc:
        raise SpecError(f"{where} fails: {first_line(exc)}") from None
    return (*top, *_submodule_names(module)), top


def _instance(spec: ModelSpec, cache: ModelCache | None) -> Any:
    from .classes import instantiate

    return cache.get(spec, instantiate) if cache is not None else instantiate(spec)


def call(instance: Any, rows: np.ndarray, names: list[str], ref: str) -> dict[str, np.ndarray]:
    """``instance({"input", "name"})`` with its outputs checked: a dict of n-row arrays."""
    from .classes import call as call_class

    return call_class(instance, rows, names, ref, key="input")


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           precision: str = "fp32", cache: ModelCache | None = None) -> Any:
    """The head in the process that runs it (``setup`` next); ``cache``: the driver's build."""
    kind = check_kind(spec)
    if kind == "callable":
        from .classes import ClassModel  # the same model, fed a head's rows, never pixels

        return ClassModel(spec, outputs, pixels=False,
                          instance=_instance(spec, cache) if cache is not None else None,
                          key="input")
    if kind == "onnx":
        from . import onnx

        return onnx.create(spec, outputs=outputs, device=device, threads=threads)
    from . import torch as backend

    return backend.create(spec, outputs=outputs, device=device, threads=threads,
                          precision=precision, cache=cache)
