"""A pycaffe-compatible API that runs Caffe models on PyTorch, with no Caffe install.

Scripts written for pycaffe run with only the import changed::

    import gristmill.caffe as caffe
    caffe.set_mode_cpu()
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
    net.blobs["data"].data[...] = batch
    probs = net.forward()["prob"]

Nothing heavy happens at import: torch and the protobuf schema load with the first submodule use.
Supported layers: see ``gristmill.caffe.layers.SUPPORTED``; others fail at load with one line.
``type: "Python"`` layers subclass :class:`Layer` (pycaffe's ``caffe.Layer``); their modules keep
``import caffe``, which resolves here while they load (see :func:`install_as_caffe`).
"""

from __future__ import annotations

from typing import Any

TRAIN = 0
TEST = 1

_LAZY = {"Net": "net", "Blob": "net", "set_mode_cpu": "net", "set_mode_gpu": "net",
         "set_device": "net", "io": None, "proto": None, "graph": None,
         "Layer": "pylayer", "install_as_caffe": "pylayer"}

__all__ = ["TEST", "TRAIN", "Blob", "Layer", "Net", "install_as_caffe", "io", "set_device",
           "set_mode_cpu", "set_mode_gpu"]


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'gristmill.caffe' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    return module if _LAZY[name] is None else getattr(module, name)
