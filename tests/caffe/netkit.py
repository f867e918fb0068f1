"""Tools for the Caffe tests: write small prototxt + caffemodel pairs with our own schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf import text_format

from gristmill.caffe import caffe_pb2 as pb


def layer(name: str, type_: str, bottom: list[str], top: list[str], params: str = "",
          blobs: list[np.ndarray] = ()) -> pb.LayerParameter:
    """A V2 layer; ``params`` is prototxt text such as ``convolution_param { num_output: 4 }``."""
    lp = pb.LayerParameter(name=name, type=type_, bottom=bottom, top=top)
    if params:
        text_format.Merge(params, lp)
    for array in blobs:
        blob = lp.blobs.add()
        blob.shape.dim.extend(np.shape(array))
        blob.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())
    return lp


def write_net(folder: Path, layers: list[pb.LayerParameter], *, shape: tuple[int, ...],
              style: str = "layer", name: str = "net", inp: str = "data") -> tuple[str, str]:
    """Write ``name.prototxt`` (no weights) and ``name.caffemodel``; returns both paths.

    ``style`` picks the input declaration: an ``Input`` layer, ``input`` + ``input_dim`` or
    ``input`` + ``input_shape``.
    """
    net = pb.NetParameter(name=name)
    if style == "layer":
        net.layer.add().CopyFrom(layer(inp, "Input", [], [inp],
                                       "input_param { shape { "
                                       + " ".join(f"dim: {d}" for d in shape) + " } }"))
    elif style == "input_dim":
        net.input.append(inp)
        net.input_dim.extend(shape)
    else:
        net.input.append(inp)
        net.input_shape.add().dim.extend(shape)
    net.layer.extend(layers)
    model = Path(folder) / f"{name}.caffemodel"
    model.write_bytes(net.SerializeToString())
    for lp in net.layer:
        del lp.blobs[:]
    proto = Path(folder) / f"{name}.prototxt"
    proto.write_text(text_format.MessageToString(net))
    return str(proto), str(model)


def run_graph(proto: str, model: str, x: np.ndarray, outputs: tuple[str, ...],
              fold: bool = False) -> dict[str, np.ndarray]:
    import torch

    from gristmill.caffe.graph import Graph

    g = Graph.load(proto, model)
    if fold:
        g.fold(outputs)
    with torch.inference_mode():
        out = g.run({next(iter(g.inputs)): torch.from_numpy(x)}, outputs)
    return {k: v.numpy() for k, v in out.items()}


def run_cv2(proto: str, model: str, x: np.ndarray, layer_name: str) -> np.ndarray:
    import cv2

    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return net.forward(layer_name)


def random_weights(proto: str, out: str, seed: int = 0, scale: float = 0.2) -> str:
    """Write ``out`` (a .caffemodel) with random weights for every layer of ``proto`` that has
    parameters, through our protobuf schema; returns ``out``."""
    from gristmill.caffe.graph import Graph
    from gristmill.caffe.proto import read_prototxt

    rng = np.random.RandomState(seed)
    shapes = {name: [a.shape for a in arrays]
              for name, arrays in Graph.load(proto, None).raw_params.items()}
    net = read_prototxt(proto)
    for lp in net.layer:
        for shape in shapes.get(lp.name, []):
            blob = lp.blobs.add()
            blob.shape.dim.extend(shape)
            values = rng.randn(*shape) * scale
            if lp.type == "Normalize":
                values = np.full(shape, 20.0)  # SSD's scale_filler value
            blob.data.extend(values.astype(np.float32).ravel().tolist())
    Path(out).write_bytes(net.SerializeToString())
    return out


# A user module of Python layers, as users write them beside their prototxt (``import caffe``).
USER_LAYERS = '''
import json

import caffe
import numpy as np


class ScaleShift(caffe.Layer):
    """top = bottom * scale + shift, both from param_str; backward passes scale * diff."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise Exception("ScaleShift takes one bottom and makes one top")
        params = json.loads(self.param_str)
        self.scale, self.shift = params["scale"], params["shift"]

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.scale + self.shift

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.scale


class SumAndMax(caffe.Layer):
    """Two tops of a new shape: per-item sum and max."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].num, 1)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        flat = bottom[0].data.reshape(bottom[0].num, -1)
        top[0].data[:, 0] = flat.sum(1)
        top[1].data[:, 0] = flat.max(1)
'''
