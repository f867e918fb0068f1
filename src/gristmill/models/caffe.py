"""Caffe backend: a ``.prototxt`` (``spec.ref``) plus ``.caffemodel`` (``spec.weights``).

``describe`` (driver) parses the prototxt only and checks the weights file exists: every blob name
is an output, the net's output blobs are the defaults, and the preset follows Caffe's conventions:
BGR, raw 0..255 pixels, std 1, mean from ``spec.mean_file`` (per-channel mean of the
``.binaryproto`` mean image) or zero. The size preset: a 224 or 227 square input (the ImageNet
models) gets the classic resize to 256 x 256 then centre crop; any other input is resized to exactly
its H x W. ``create`` (worker) builds a model whose ``setup`` loads the weights, prunes the graph to
the requested blobs, folds BatchNorm/Scale into convolutions, and moves it to the device
(channels_last). All user errors are one-line ``SpecError``s. """

from __future__ import annotations

import logging

import numpy as np

from ..errors import SpecError
from ..spec import ModelSpec, Preprocess
from .base import FULL_PRECISION, Capabilities, ModelCache, ModelInfo

log = logging.getLogger(__name__)

_IMAGENET_SIZES = (224, 227)


def capabilities(spec: ModelSpec) -> Capabilities:
    return FULL_PRECISION


def describe(spec: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    """What the net offers, from the prototxt alone (cheap; no weights are read)."""
    import os

    from ..caffe import caffe_pb2 as pb
    from ..caffe.graph import python_refused
    from ..caffe.layers import BUILDERS, unsupported
    from ..caffe.proto import in_phase, net_inputs, read_prototxt
    from ..caffe.pylayer import find_module

    net = read_prototxt(spec.ref)
    inputs = net_inputs(net)
    if len(inputs) != 1 or len(inputs[0][1]) != 4 or inputs[0][1][1] != 3:
        raise SpecError(f"model {spec.ref}: gristmill feeds one 3-channel image input, the net "
                        f"declares {[(n, s) for n, s in inputs]}")
    # Versioned as the graph does it: an in-place layer makes a new version of its blob, and an
    # output is a blob whose last version no layer reads.
    version: dict[str, int] = {inputs[0][0]: 0}
    reads: set[tuple[str, int]] = set()
    for lp in net.layer:
        if not in_phase(lp, pb.TEST) or lp.type == "Input":
            continue
        if lp.type == "Python":
            if not spec.allow_python_layers:
                raise python_refused(lp)
            find_module(lp, [os.path.dirname(os.path.abspath(spec.ref))])
        elif lp.type not in BUILDERS:
            raise unsupported(lp)
        reads.update((b, version.get(b, -1)) for b in lp.bottom)
        for top in lp.top:
            version[top] = version.get(top, -1) + 1
    _check_weights_path(spec)  # after the net itself: its own faults are named first
    defaults = tuple(n for n, v in version.items() if (n, v) not in reads and n != inputs[0][0])
    return ModelInfo(outputs=tuple(version), default_outputs=defaults,
                     preset=preset(inputs[0][1], spec.mean_file))


def preset(shape: tuple[int, ...], mean_file: str | None) -> Preprocess:
    """Caffe's preprocessing for an input of ``shape`` (N, C, H, W)."""
    from ..caffe.proto import channel_mean

    h, w = int(shape[2]), int(shape[3])
    mean = channel_mean(mean_file) if mean_file else (0.0, 0.0, 0.0)
    if len(mean) != 3:
        raise SpecError(f"mean file {mean_file} has {len(mean)} channels; the net takes 3")
    sized = ({"resize": (256, 256), "crop": (h, w)} if h == w and h in _IMAGENET_SIZES
             else {"resize": (h, w)})
    return Preprocess(mean=mean, std=(1.0, 1.0, 1.0), channel_order="BGR", layout="NCHW", **sized)


def _check_weights_path(spec: ModelSpec) -> None:
    import os

    if not spec.weights:
        raise SpecError(f"model {spec.ref} needs its weights: give --weights FILE.caffemodel")
    if not os.path.isfile(spec.weights):
        raise SpecError(f"caffemodel {spec.weights} does not exist")
    if os.path.getsize(spec.weights) == 0:
        raise SpecError(f"caffemodel {spec.weights} is empty")


class CaffeModel:
    """One Caffe net in one worker: pruned to ``outputs``, folded, on ``device``."""

    def __init__(self, spec: ModelSpec, *, outputs: tuple[str, ...], device: str,
                 threads: int) -> None:
        self.spec, self.outputs, self.device, self.threads = spec, outputs, device, threads
        self.graph = None
        self.input_name = ""
        self._detections: dict[str, int] = {}

    def setup(self) -> None:
        import torch

        from ..caffe.graph import Graph

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        _check_weights_path(self.spec)
        graph = Graph.load(self.spec.ref, self.spec.weights,
                           python_layers=self.spec.allow_python_layers)
        outputs = self.outputs or tuple(graph.outputs())
        graph.plan(outputs)  # SpecError for unknown names, before any batch arrives
        graph.ops = graph.plan(outputs)
        folded = graph.fold(outputs)
        device = torch.device(self.device if self.device not in ("", "auto") else "cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SpecError(f"device {self.device}: CUDA is not available on this machine")
        self.graph = graph.to(device, channels_last=True)
        self.outputs, self._device = outputs, device
        self.input_name = next(iter(graph.inputs))
        self._detections = _per_image_outputs(graph, outputs)
        log.info("caffe net %s: %d ops after pruning, %d BatchNorm/Scale folded",
                 graph.name, len(graph.ops), folded)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        assert self.graph is not None, "setup() first"
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
            x = x.contiguous(memory_format=torch.channels_last)
            out = self.graph.run({self.input_name: x}, self.outputs)
            arrays = {n: np.ascontiguousarray(t.float().cpu().numpy()) for n, t in out.items()}
        if self._detections:
            from ..caffe.detection import split_by_image

            for name, keep in self._detections.items():
                arrays[name] = split_by_image(arrays[name], len(batch), keep)
        return arrays

    def teardown(self) -> None:
        self.graph = None


def _per_image_outputs(graph, outputs: tuple[str, ...]) -> dict[str, int]:
    """Requested outputs that are not one row per image: SSD's DetectionOutput (rows for the
    whole batch) becomes keep_top_k rows per image; any other such blob is refused here."""
    producers = {top: op.layer for op in graph.ops for top in op.tops}
    shapes = [graph.infer_shapes({n: (b, *s[1:]) for n, s in graph.input_shapes.items()})
              for b in (2, 3)]
    detections = {}
    for name in outputs:
        layer = producers.get(name)
        if layer is not None and layer.type == "DetectionOutput":
            keep = int(layer.attrs["keep_top_k"])
            if keep < 1:
                raise SpecError(f"layer {layer.name!r} (DetectionOutput): set keep_top_k to store "
                                "its detections per image (rows are padded to keep_top_k)")
            detections[name] = keep
        elif (shapes[0][name][:1], shapes[1][name][:1]) != ((2,), (3,)):
            raise SpecError(f"blob {name!r} has shape {shapes[0][name]} for 2 images: not one "
                            "row per image, so it cannot be stored per image")
    return detections


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int) -> CaffeModel:
    """The model for one worker; ``setup()`` loads it."""
    return CaffeModel(spec, outputs=outputs, device=device, threads=threads)
