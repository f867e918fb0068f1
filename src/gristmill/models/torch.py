"""PyTorch models: bundled EfficientNet-Lite0, ``package.module:factory``, TorchScript, exported.

Outputs are named by what ``forward`` returns (a tensor is ``output``, a dict keeps its keys, a
tuple gives ``output0``, ``output1`` ...) and, for eager modules, by any submodule's name, captured
with a forward hook (``--outputs layer4,fc``). ``describe`` finds the names with one forward pass
on a zero image in the driver, so a wrong name fails before any worker starts.

Weights files: a ``.safetensors`` file is mapped (``weightfile``; a pickle under that name is
refused unread); any other file is read with ``torch.load(weights_only=True)``, so a pickle in a
weights file cannot run code unless the user passes ``trusted_pickle``.

Speed and memory: an eager module runs as its inference graph (``fold.for_inference``: BatchNorm
folded into convolutions, residual additions in place). The driver saves that graph's weights once
(``share_weights``, already in channels_last) and every worker builds the module on the meta device,
rewrites it the same way and assigns the tensors of a
``torch.load(mmap=True)`` of that file, so CPU workers on one machine share one copy of the weights
in the page cache. Inference runs under ``inference_mode`` in channels_last; ``precision``
fp16/bf16 runs it under autocast. On a GPU the slot ring is page-locked (``pin_host``) and each
batch is copied on a side stream with a non-blocking copy that the compute stream waits for.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import SpecError, first_line
from ..spec import ModelSpec
from . import kind_of, weightfile
from .base import (
    EFFICIENTNET_PRESET,
    IMAGENET_PRESET,
    Capabilities,
    ModelCache,
    ModelInfo,
    import_ref,
)
from .fold import for_inference

EAGER = ("builtin", "factory")  # kinds built as nn.Modules: shared weights, the inference graph


EAGER_CAPABILITIES = Capabilities(precisions=frozenset({"fp32", "fp16", "bf16"}),
                                  shared_weights=True, pinned_input=True, driver_model=True)
FILE_CAPABILITIES = Capabilities(precisions=frozenset({"fp32", "fp16", "bf16"}),
                                 pinned_input=True, driver_model=True)


def capabilities(spec: ModelSpec) -> Capabilities:
    """Every torch model runs under autocast and takes a pinned ring; only eager modules (built
    from code) can be rebuilt on the meta device around shared, mapped weights."""
    return EAGER_CAPABILITIES if kind_of(spec.ref) in EAGER else FILE_CAPABILITIES


def _load_factory(ref: str) -> Callable[[], nn.Module]:
    factory = import_ref(ref)
    if not callable(factory):
        module_name, _, attr = ref.partition(":")
        raise SpecError(f"model {ref}: {module_name} has no callable {attr!r}")
    return factory


def build_module(spec: ModelSpec, *, pretrained: bool = True) -> nn.Module:
    """The module for ``spec`` on the CPU, in eval mode, weights loaded (unless not ``pretrained``:
    then the bundled model keeps its initial weights and ``spec.weights`` is not read)."""
    kind = kind_of(spec.ref)
    try:
        if kind == "builtin":
            from .efficientnet import efficientnet_lite0

            module = efficientnet_lite0(pretrained=pretrained)
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
        reason = first_line(exc)
        raise SpecError(f"model {spec.ref} cannot be loaded: {reason}") from None
    if spec.weights and pretrained:
        _load_weights(module, spec)
    if hasattr(module, "eval") and kind != "exported":
        module.eval()
    return module


def _load_weights(module: nn.Module, spec: ModelSpec) -> None:
    path = spec.weights or ""
    if not os.path.isfile(path):
        raise SpecError(f"weights file {path} does not exist")
    if path.lower().endswith(weightfile.SUFFIX):
        state = weightfile.map_tensors(path)  # a pickle named .safetensors is refused unread
    else:
        state = _load_pickled(path, spec.trusted_pickle)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise SpecError(f"weights file {path} does not fit model {spec.ref}: {first}") from None


def _load_pickled(path: str, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:
        first = first_line(exc)
        raise SpecError(f"weights file {path} cannot be read: {first}") from None


def _module(spec: ModelSpec, cache: ModelCache | None) -> nn.Module:
    return cache.get(spec, build_module) if cache is not None else build_module(spec)


def share_weights(spec: ModelSpec, folder: str, cache: ModelCache | None = None,
                  keep: tuple[str, ...] = ()) -> str | None:
    """Save the eager module's weights for workers to mmap; None if not eager.

    The weights are those of ``fold.for_inference(module, keep)`` (``keep``: the outputs the
    workers hook), in channels_last, which is what ``load_shared`` with the same ``keep`` expects.
    Rewritten on every run (temp file, then rename), so a changed factory never serves stale
    weights; a worker still holding the old file keeps its own mapping.
    """
    if kind_of(spec.ref) not in EAGER:
        return None
    module = for_inference(_module(spec, cache), keep).to(memory_format=torch.channels_last)
    key = hashlib.sha256(f"{spec.ref}|{spec.weights}".encode()).hexdigest()[:12]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"weights-{key}.pt")
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)
    return path


class _SkipInitOnMeta(TorchFunctionMode):
    """Make value writes to meta tensors (a factory's ``nn.init.*_`` calls) no-ops.

    Their values would be replaced by the mapped weights anyway, and on the meta device torch runs
    them through its Python reference kernels, whose first use imports ``torch._dynamo`` and sympy:
    measured 1.4 s and 67 MB of private memory per worker for a ResNet-50 factory.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # only calls that write values: one that changes a shape (resize_, t_) must still run
        if (getattr(func, "__module__", None) == "torch.nn.init"
                or getattr(func, "__name__", "") in _VALUE_WRITES):
            # the tensor written: first positional, or ``tensor=`` (nn.init's own calls)
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


_VALUE_WRITES = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "copy_", "random_", "bernoulli_", "exponential_",
    "log_normal_", "cauchy_", "geometric_", "erfinv_", "clamp_", "mul_", "add_", "sub_", "div_"})


def load_shared(spec: ModelSpec, path: str, keep: tuple[str, ...] = ()) -> nn.Module:
    """The inference module (``fold.for_inference`` with ``keep``) with its tensors mapped from
    ``path`` (shared pages), as ``share_weights`` saved them; a private copy if the module cannot
    be built on the meta device or keeps tensors the file lacks."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    try:
        with _SkipInitOnMeta(), torch.device("meta"):
            module = build_module(spec, pretrained=False)
        module = for_inference(module, keep)
        module.load_state_dict(state, assign=True)
        tensors = [*module.parameters(), *module.buffers()]
        if any(t.is_meta for t in tensors):
            raise ValueError("tensors outside the state dict")
    except Exception:
        module = for_inference(build_module(spec, pretrained=False), keep)
        module.load_state_dict(state)
    return module.eval()


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


def probe_outputs(module: Callable[[torch.Tensor], Any], ref: str,
                  size: tuple[int, int]) -> list[str]:
    """The names of what ``module`` returns for one zero image of ``size`` (height, width), so a
    model that cannot run, or a wrong output name, fails in the driver before any worker starts;
    a one-line SpecError when the module fails on it."""
    h, w = size
    try:
        with torch.inference_mode():
            return list(flatten_outputs(module(torch.zeros(1, 3, h, w))))
    except Exception as exc:
        raise SpecError(f"model {ref} fails on a {h}x{w} image: {first_line(exc)}") from None


def describe(spec: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    module = _module(spec, cache)
    preset = EFFICIENTNET_PRESET if kind_of(spec.ref) == "builtin" else IMAGENET_PRESET
    top = probe_outputs(module, spec.ref, preset.size)
    return ModelInfo(outputs=(*top, *_submodule_names(module)),
                     default_outputs=tuple(top), preset=preset)


@dataclass
class TorchModel:
    """A PyTorch module running on one device, returning the requested outputs as numpy."""

    spec: ModelSpec
    outputs: tuple[str, ...]
    device: str = "cpu"
    threads: int = 0
    precision: str = "fp32"
    shared_weights: str | None = None
    prebuilt: Any = None  # calibration in the driver runs the module describe already built
    module: Any = None
    _captured: dict[str, torch.Tensor] = field(default_factory=dict)
    _hooks: list[Any] = field(default_factory=list)
    _stream: Any = None
    _pinned: list[int] = field(default_factory=list)

    def setup(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        # a worker on another node (Ray) may not see the driver's file: then it loads its own
        shared = self.shared_weights and os.path.isfile(self.shared_weights)
        if self.prebuilt is not None:
            module = self.prebuilt
        elif shared:
            module = load_shared(self.spec, self.shared_weights, self.outputs)
        else:
            module = build_module(self.spec)
            if kind_of(self.spec.ref) in EAGER:
                module = for_inference(module, self.outputs)
        self.device = str(torch.device(self.device))
        if self.device.startswith("cuda"):
            self._stream = torch.cuda.Stream(self.device)
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
            elif isinstance(output, dict):  # a transformers ModelOutput: its first tensor
                output = next(v for v in output.values() if isinstance(v, torch.Tensor))
            self._captured[name] = output

        return capture

    def pin_host(self, address: int, nbytes: int) -> None:
        """Page-lock host memory the batches come from (a slot ring) so copies can be async."""
        if self._stream is None:
            return
        code = torch.cuda.cudart().cudaHostRegister(address, nbytes, 0)
        if int(code) == 0:
            self._pinned.append(address)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if x.ndim == 4 else torch.contiguous_format
        if self._stream is None:
            return x.contiguous(memory_format=layout)
        # Copy on a side stream; the compute stream waits for it, and the caller's slot is free
        # again only after predict returns (outputs are synchronised back to the host).
        with torch.cuda.stream(self._stream):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=layout)
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self._stream)
        x.record_stream(current)
        return x

    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a float32 batch in the spec's layout, as float32 numpy arrays."""
        x = self._to_device(torch.from_numpy(batch))
        self._captured.clear()
        with torch.inference_mode(), self._autocast():
            top = flatten_outputs(self.module(x))
        found = {**top, **self._captured}
        return {name: found[name].float().cpu().numpy() for name in self.outputs}

    def teardown(self) -> None:
        for hook in self._hooks:
            hook.remove()
        for address in self._pinned:
            torch.cuda.cudart().cudaHostUnregister(address)
        self._pinned.clear()
        self.module = None


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           precision: str = "fp32", shared_weights: str | None = None,
           cache: ModelCache | None = None) -> TorchModel:
    """``cache``: the driver's, whose eager module (built by ``describe``) the model runs as is."""
    prebuilt = cache.get(spec, build_module) if (
        cache is not None and kind_of(spec.ref) in EAGER) else None
    return TorchModel(spec=spec, outputs=outputs, device=device, threads=threads,
                      precision=precision, shared_weights=shared_weights,
                      prebuilt=prebuilt)
