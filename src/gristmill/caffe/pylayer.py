"""Caffe's ``type: "Python"`` layers: user classes with pycaffe's ``caffe.Layer`` contract.

Contract: ``build_python(lp, blobs, shapes, dirs)`` imports ``python_param.module`` (from
``sys.path``, else from ``dirs``: the prototxt's folder), instantiates ``python_param.layer``,
sets ``param_str`` / ``phase`` / ``blobs``, calls ``setup(bottom, top)`` once and returns a graph
layer whose function runs ``reshape`` + ``forward`` on numpy blobs each call (and ``backward``
under autograd, see :class:`_PyFunction`). While the module is imported, ``import caffe`` (and
``caffe.io``) in it resolves to :mod:`gristmill.caffe` unless BVLC pycaffe is installed; code that
imports ``caffe`` later (inside a function) calls :func:`install_as_caffe` first.
Loading runs user code, so callers decide whether it is allowed (the CLI asks for
``--allow-python-layers``). Errors a user can cause are one-line ``SpecError``s naming the layer.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import SpecError
from . import caffe_pb2 as pb
from .blob import Blob


class Layer:
    """Base class of Python layers, as pycaffe's ``caffe.Layer``: override ``setup``,
    ``reshape``, ``forward`` and (for ``net.backward()``) ``backward``."""

    param_str: str = ""
    phase: int = pb.TEST

    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Called once, at load: check bottoms, read ``self.param_str``."""

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Called before every forward: ``top[i].reshape(*shape)``."""

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Write ``top[i].data[...]`` from ``bottom[i].data``."""

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        """Write ``bottom[i].diff[...]`` from ``top[i].diff`` where ``propagate_down[i]``."""


class BlobVec(list):
    """``self.blobs`` of a Python layer: stored weights, and ``add_blob(*shape)`` as pycaffe."""

    def add_blob(self, *shape: int) -> None:
        self.append(Blob(shape))


def _real_caffe_installed() -> bool:
    """Whether ``import caffe`` gives BVLC pycaffe (its package holds the ``_caffe`` binary)."""
    try:
        spec = importlib.util.find_spec("caffe")
    except (ImportError, ValueError):
        return False
    folders = list(spec.submodule_search_locations or ()) if spec else []
    return any(glob.glob(os.path.join(f, "_caffe*")) for f in folders)


def _aliases() -> dict[str, Any]:
    import gristmill.caffe as ours

    return {"caffe": ours, "caffe.io": importlib.import_module("gristmill.caffe.io")}


def install_as_caffe() -> None:
    """Make ``import caffe`` give :mod:`gristmill.caffe` from now on, unless pycaffe is installed.

    Python layers' modules get this automatically while they are imported; call it when code
    imports ``caffe`` later (inside a function, or in a module imported afterwards).
    """
    if not _real_caffe_installed():
        sys.modules.update(_aliases())


@contextlib.contextmanager
def _loading(dirs: list[str]) -> Iterator[None]:
    """``import caffe`` aliased (unless pycaffe is installed) and ``dirs`` searched last, for the
    duration of an import; the previous ``sys.modules`` entries come back afterwards."""
    extra = [d for d in dirs if d not in sys.path]
    sys.path.extend(extra)
    saved = {} if _real_caffe_installed() else {k: sys.modules.get(k) for k in _aliases()}
    sys.modules.update({k: v for k, v in _aliases().items() if k in saved})
    try:
        yield
    finally:
        for key, previous in saved.items():
            if previous is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = previous
        for d in extra:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def find_module(lp: pb.LayerParameter, dirs: list[str]) -> str:
    """The file of ``lp``'s module, without running it; SpecError naming it when not found."""
    module = _module_name(lp)
    with _loading(dirs):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        raise SpecError(f"Python layer {lp.name!r}: module {module!r} is not on sys.path nor "
                        f"beside the prototxt ({', '.join(dirs) or 'no folder'})")
    return spec.origin or module


def _module_name(lp: pb.LayerParameter) -> str:
    module = lp.python_param.module
    if not module or not lp.python_param.layer:
        raise SpecError(f"Python layer {lp.name!r} needs python_param {{ module: ... layer: ... }}")
    return module


def instantiate(lp: pb.LayerParameter, dirs: list[str]) -> Layer:
    """Import ``python_param.module`` and make an instance of ``python_param.layer``."""
    module_name = _module_name(lp)
    find_module(lp, dirs)
    with _loading(dirs):
        module = importlib.import_module(module_name)
    cls = getattr(module, lp.python_param.layer, None)
    if not isinstance(cls, type):
        raise SpecError(f"Python layer {lp.name!r}: module {module_name!r} has no class "
                        f"{lp.python_param.layer!r}")
    instance = cls()
    instance.param_str = lp.python_param.param_str
    instance.phase = pb.TEST
    return instance


def build_python(lp: pb.LayerParameter, blobs: list[np.ndarray] | None,
                 shapes: list[tuple[int, ...]], dirs: list[str]):
    """The graph layer running ``lp``'s Python class; ``setup`` is called here, once."""
    from .layer_base import Layer as GraphLayer

    instance = instantiate(lp, dirs)
    instance.blobs = BlobVec(Blob(a.shape, np.array(a, np.float32)) for a in blobs or ())
    bottom = [Blob(s) for s in shapes]
    top = [Blob((1,)) for _ in lp.top]
    try:
        instance.setup(bottom, top)
    except Exception as e:
        raise SpecError(f"Python layer {lp.name!r} ({lp.python_param.module}."
                        f"{lp.python_param.layer}) setup failed: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None
    n_tops = len(lp.top)
    down = [True] * len(shapes)
    if lp.propagate_down:
        down = [bool(d) for d in lp.propagate_down]

    def fn(xs: list[torch.Tensor], ps: list[torch.Tensor]) -> list[torch.Tensor]:
        if n_tops == 0:  # e.g. a layer that only reports: nothing for autograd to hold
            bottom = _bottom(tuple(xs))
            instance.reshape(bottom, [])
            instance.forward(bottom, [])
            return []
        outs = _PyFunction.apply(instance, n_tops, down, *xs)
        return [outs] if isinstance(outs, torch.Tensor) else list(outs)

    def meta(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Shapes only: the user's ``reshape`` on zero blobs (``forward`` may consume data)."""
        tops = _reshape(instance, [Blob(tuple(x.shape)) for x in xs], n_tops)
        return [torch.empty(t.shape, device="meta") for t in tops]
    return GraphLayer(lp.name, lp.type, fn, [], {"python": instance, "meta": meta})


def _reshape(instance: Layer, bottom: list[Blob], n_tops: int) -> list[Blob]:
    top = [Blob((1,)) for _ in range(n_tops)]
    instance.reshape(bottom, top)
    return top


def _bottom(xs: tuple[torch.Tensor, ...]) -> list[Blob]:
    # Own copies: the user's forward may write into bottom data, and the tensors may be shared.
    return [Blob(tuple(x.shape), np.array(x.detach().cpu().numpy(), np.float32)) for x in xs]


class _PyFunction(torch.autograd.Function):
    """The user's forward/backward as one autograd node (numpy in between, on the CPU)."""

    @staticmethod
    def forward(ctx, instance: Layer, n_tops: int, down: list[bool], *xs: torch.Tensor):
        bottom = _bottom(xs)
        top = _reshape(instance, bottom, n_tops)
        instance.forward(bottom, top)
        device = xs[0].device if xs else torch.device("cpu")
        outs = tuple(torch.from_numpy(np.array(t.data, np.float32)).to(device) for t in top)
        ctx.instance, ctx.down, ctx.bottom, ctx.top = instance, down, bottom, top
        return outs if len(outs) != 1 else outs[0]

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        top, bottom = ctx.top, ctx.bottom
        for blob, g in zip(top, grads, strict=False):
            blob.diff[...] = 0 if g is None else g.detach().cpu().numpy()
        for blob in bottom:
            blob.diff[...] = 0
        down = [d and needs for d, needs in zip(ctx.down, ctx.needs_input_grad[3:], strict=False)]
        ctx.instance.backward(top, down, bottom)
        device = grads[0].device if grads else torch.device("cpu")
        diffs = [torch.from_numpy(np.array(b.diff, np.float32)).to(device) if d else None
                 for b, d in zip(bottom, down, strict=False)]
        return (None, None, None, *diffs)
