"""PyTorch models: bundled EfficientNet-Lite0, ``package.module:factory``, TorchScript, exported.

Outputs are named by what ``forward`` returns (a tensor is ``output``, a dict keeps its keys, a
tuple gives ``output0``, ``output1`` ...) and, for eager modules, by any submodule's name, captured
with a forward hook (``--outputs layer4,fc``). ``describe`` finds the names with one forward pass
on a zero image in the driver, so a wrong name fails before any worker starts.

Weights files are read with ``torch.load(weights_only=True)``: a pickle in a weights file cannot run
code unless the user passes ``trusted_pickle``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SpecError
from ..spec import ModelSpec, Preprocess
from . import kind_of
from .base import ModelInfo

EFFICIENTNET_PRESET = Preprocess(resize=256, crop=(224, 224), mean=(127.5, 127.5, 127.5),
                                 std=(127.5, 127.5, 127.5), channel_order="RGB", layout="NCHW")
IMAGENET_PRESET = Preprocess(resize=256, crop=(224, 224), mean=(123.675, 116.28, 103.53),
                             std=(58.395, 57.12, 57.375), channel_order="RGB", layout="NCHW")


def _load_factory(ref: str) -> Callable[[], nn.Module]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's model reference
        raise SpecError(f"model {ref}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"model {ref}: {module_name} has no callable {attr!r}")
    return factory


def build_module(spec: ModelSpec) -> nn.Module:
    """The module for ``spec`` on the CPU, in eval mode, weights loaded."""
    kind = kind_of(spec.ref)
    try:
        if kind == "builtin":
            from .efficientnet import efficientnet_lite0

            module = efficientnet_lite0()
        elif kind == "factory":
            module = _load_factory(spec.ref)()
            if not isinstance(module, nn.Module):
                raise SpecError(f"model {spec.ref}: factory returned {type(module).__name__}, "
                                "not a torch.nn.Module")
        elif kind == "torchscript":
            module = torch.jit.load(spec.ref, map_location="cpu")
        else:
            # torch logs a traceback before raising on a corrupt .pt2: our one line says it all
            quiet = logging.getLogger("torch.export")
            level, quiet.level = quiet.level, logging.CRITICAL
            try:
                module = torch.export.load(spec.ref).module()
            finally:
                quiet.setLevel(level)
    except SpecError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"model {spec.ref} cannot be loaded: {reason}") from None
    if spec.weights:
        _load_weights(module, spec)
    if hasattr(module, "eval") and kind != "exported":
        module.eval()
    return module


def _load_weights(module: nn.Module, spec: ModelSpec) -> None:
    path = spec.weights or ""
    if not os.path.isfile(path):
        raise SpecError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not spec.trusted_pickle)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"weights file {path} cannot be read: {first}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise SpecError(f"weights file {path} does not fit model {spec.ref}: {first}") from None


def flatten_outputs(result: Any) -> dict[str, torch.Tensor]:
    """Name what ``forward`` returned: ``output``, the dict's keys, or ``output0``..."""
    if isinstance(result, torch.Tensor):
        return {"output": result}
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items() if isinstance(v, torch.Tensor)}
    if isinstance(result, list | tuple):
        return {f"output{i}": v for i, v in enumerate(result) if isinstance(v, torch.Tensor)}
    raise TypeError(f"forward returned {type(result).__name__}, not tensors")


def _submodule_names(module: nn.Module) -> list[str]:
    if isinstance(module, torch.jit.ScriptModule) or not isinstance(module, nn.Module):
        return []
    return [name for name, _ in module.named_modules() if name]


def describe(spec: ModelSpec) -> ModelInfo:
    module = build_module(spec)
    preset = EFFICIENTNET_PRESET if kind_of(spec.ref) == "builtin" else IMAGENET_PRESET
    h, w = preset.size
    try:
        with torch.inference_mode():
            top = list(flatten_outputs(module(torch.zeros(1, 3, h, w))))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"model {spec.ref} fails on a {h}x{w} image: {first}") from None
    return ModelInfo(outputs=(*top, *_submodule_names(module)),
                     default_outputs=tuple(top), preset=preset)


@dataclass
class TorchModel:
    """A PyTorch module running on one device, returning the requested outputs as numpy."""

    spec: ModelSpec
    outputs: tuple[str, ...]
    device: str = "cpu"
    threads: int = 0
    module: Any = None
    _captured: dict[str, torch.Tensor] = field(default_factory=dict)
    _hooks: list[Any] = field(default_factory=list)

    def setup(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        module = build_module(self.spec)
        self.device = str(torch.device(self.device))
        if isinstance(module, nn.Module):
            module = module.to(self.device, memory_format=torch.channels_last)
            named = dict(module.named_modules()) if not isinstance(
                module, torch.jit.ScriptModule) else {}
            for name in self.outputs:
                if name in named:
                    self._hooks.append(named[name].register_forward_hook(self._hook(name)))
        self.module = module

    def _hook(self, name: str) -> Callable[..., None]:
        def capture(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, tuple | list):
                output = output[0]
            self._captured[name] = output

        return capture

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(batch)
        if x.ndim == 4:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        else:
            x = x.to(self.device, non_blocking=True)
        self._captured.clear()
        with torch.inference_mode():
            top = flatten_outputs(self.module(x))
        found = {**top, **self._captured}
        return {name: found[name].float().cpu().numpy() for name in self.outputs}

    def teardown(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self.module = None


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int) -> TorchModel:
    return TorchModel(spec=spec, outputs=outputs, device=device, threads=threads)
