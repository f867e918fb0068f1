"""Reading Caffe files: prototxt (text) and caffemodel / binaryproto (binary), via protobuf.

Contract: every function here takes a path and returns protobuf messages or numpy arrays from our
own schema (``caffe.proto`` → ``caffe_pb2``). Legacy V1 nets (``layers { type: CONVOLUTION }``) are
upgraded to V2 ``LayerParameter`` in memory; the three deploy input styles (``Input`` layer,
``input`` + ``input_dim``, ``input`` + ``input_shape``) are normalised by :func:`net_inputs`.
Anything a user can get wrong (missing, truncated, oversized or unparsable file) raises
:class:`gristmill.errors.SpecError` with a one-line message naming the file. Runs wherever a net is
loaded: the driver (prototxt only) and the workers (both files).
"""

from __future__ import annotations

import logging
import os

import numpy as np
from google.protobuf import message, text_format

from ..errors import SpecError
from . import caffe_pb2 as pb

log = logging.getLogger(__name__)

# A deploy prototxt is a few hundred KB at most; a caffemodel holds the weights (VGG-16 is 528 MB)
# and protobuf cannot parse a single message past 2 GiB.
MAX_PROTOTXT_BYTES = 64 << 20
MAX_CAFFEMODEL_BYTES = (2 << 30) - 1

_V1_TYPES: dict[int, str] = {
    pb.V1LayerParameter.ABSVAL: "AbsVal", pb.V1LayerParameter.ACCURACY: "Accuracy",
    pb.V1LayerParameter.ARGMAX: "ArgMax", pb.V1LayerParameter.BNLL: "BNLL",
    pb.V1LayerParameter.CONCAT: "Concat", pb.V1LayerParameter.CONVOLUTION: "Convolution",
    pb.V1LayerParameter.DATA: "Data", pb.V1LayerParameter.DECONVOLUTION: "Deconvolution",
    pb.V1LayerParameter.DROPOUT: "Dropout", pb.V1LayerParameter.DUMMY_DATA: "DummyData",
    pb.V1LayerParameter.ELTWISE: "Eltwise", pb.V1LayerParameter.EXP: "Exp",
    pb.V1LayerParameter.FLATTEN: "Flatten", pb.V1LayerParameter.HDF5_DATA: "HDF5Data",
    pb.V1LayerParameter.IMAGE_DATA: "ImageData", pb.V1LayerParameter.INNER_PRODUCT: "InnerProduct",
    pb.V1LayerParameter.LRN: "LRN", pb.V1LayerParameter.MEMORY_DATA: "MemoryData",
    pb.V1LayerParameter.MVN: "MVN", pb.V1LayerParameter.POOLING: "Pooling",
    pb.V1LayerParameter.POWER: "Power", pb.V1LayerParameter.RELU: "ReLU",
    pb.V1LayerParameter.SIGMOID: "Sigmoid", pb.V1LayerParameter.SILENCE: "Silence",
    pb.V1LayerParameter.SOFTMAX: "Softmax", pb.V1LayerParameter.SOFTMAX_LOSS: "SoftmaxWithLoss",
    pb.V1LayerParameter.SPLIT: "Split", pb.V1LayerParameter.SLICE: "Slice",
    pb.V1LayerParameter.TANH: "TanH", pb.V1LayerParameter.WINDOW_DATA: "WindowData",
    pb.V1LayerParameter.THRESHOLD: "Threshold",
}
# Parameter sub-messages present in both V1LayerParameter and LayerParameter, copied by name.
_V1_PARAMS = tuple(
    f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in pb.LayerParameter.DESCRIPTOR.fields_by_name
)


def _read(path: str, limit: int, what: str) -> bytes:
    if not os.path.exists(path):
        raise SpecError(f"{what} {path} does not exist")
    if not os.path.isfile(path):
        raise SpecError(f"{what} {path} is not a file")
    size = os.path.getsize(path)
    if size > limit:
        raise SpecError(f"{what} {path} is {size} bytes, over the {limit}-byte limit for this kind")
    if size == 0:
        raise SpecError(f"{what} {path} is empty")
    with open(path, "rb") as f:
        return f.read()


def read_prototxt(path: str) -> pb.NetParameter:
    """The net in a text prototxt, upgraded to V2 layers; SpecError names the failing line."""
    data = _read(path, MAX_PROTOTXT_BYTES, "prototxt")
    net = pb.NetParameter()
    try:
        # Training-only fields of our schema's omitted messages (data_param, ...) are skipped, so a
        # train_val prototxt still parses and then fails on its unsupported layer types by name.
        text_format.Parse(data.decode("utf-8", "replace"), net, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise SpecError(f"prototxt {path} does not parse: {_one_line(e)}") from None
    return upgrade(net)


def _parse_binary(path: str, what: str, kind: str, into: message.Message) -> None:
    """Parse the binary protobuf at ``path`` into ``into``; one-line SpecError if it is not one."""
    data = _read(path, MAX_CAFFEMODEL_BYTES, what)
    try:
        into.ParseFromString(data)
    except (message.DecodeError, RuntimeError) as e:
        raise SpecError(f"{what} {path} is truncated or not a {kind} ({_one_line(e)})") from None


def read_caffemodel(path: str) -> pb.NetParameter:
    """The net (with weights) in a binary .caffemodel, upgraded to V2 layers."""
    net = pb.NetParameter()
    _parse_binary(path, "caffemodel", "caffemodel", net)
    if not net.layer and not net.layers:
        raise SpecError(f"caffemodel {path} holds no layers: not a caffemodel?")
    return upgrade(net)


def read_mean(path: str) -> np.ndarray:
    """The mean image (C, H, W) in a ``.binaryproto`` (a BlobProto from compute_image_mean)."""
    blob = pb.BlobProto()
    _parse_binary(path, "mean file", "binaryproto", blob)
    array = blob_array(blob, where=f"mean file {path}")
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3:
        raise SpecError(f"mean file {path} holds shape {array.shape}; expected (1,) C, H, W")
    return array


def channel_mean(path: str) -> tuple[float, ...]:
    """Per-channel mean of the mean image in ``path``, in the file's order (BGR for Caffe)."""
    mean = read_mean(path)
    return tuple(float(v) for v in mean.reshape(mean.shape[0], -1).mean(1))


def blob_shape(blob: pb.BlobProto) -> tuple[int, ...]:
    """A blob's shape: ``shape`` when set, else the legacy num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return (len(blob.data) or len(blob.double_data),)


def blob_array(blob: pb.BlobProto, *, where: str) -> np.ndarray:
    """A blob's values as a float32 array of its shape; SpecError when count and shape disagree."""
    shape = blob_shape(blob)
    values = blob.data if len(blob.data) else blob.double_data
    array = np.array(values, dtype=np.float32)
    if array.size != int(np.prod(shape)):
        raise SpecError(f"{where}: blob of shape {shape} holds {array.size} values (truncated?)")
    return array.reshape(shape)


def upgrade(net: pb.NetParameter) -> pb.NetParameter:
    """``net`` with V1 ``layers`` rewritten as V2 ``layer`` entries (in place; returned)."""
    if not net.layers:
        return net
    if net.layer:
        raise SpecError(f"net {net.name!r} mixes V1 'layers' and V2 'layer' entries")
    for old in net.layers:
        new = net.layer.add()
        new.name = old.name
        new.type = _V1_TYPES.get(old.type, pb.V1LayerParameter.LayerType.Name(old.type))
        new.bottom.extend(old.bottom)
        new.top.extend(old.top)
        new.blobs.extend(old.blobs)
        new.include.extend(old.include)
        new.exclude.extend(old.exclude)
        new.loss_weight.extend(old.loss_weight)
        for lr in old.blobs_lr:  # V1's per-blob learning rates are V2's ParamSpec.lr_mult
            new.param.add().lr_mult = lr
        for name in _V1_PARAMS:
            if old.HasField(name):
                getattr(new, name).CopyFrom(getattr(old, name))
    del net.layers[:]
    return net


def in_phase(layer: pb.LayerParameter, phase: int) -> bool:
    """Whether ``layer`` belongs to the net in ``phase`` (its include/exclude phase rules)."""
    if layer.HasField("phase") and layer.phase != phase:
        return False
    if layer.include:
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(r.HasField("phase") and r.phase == phase for r in layer.exclude)


def net_inputs(net: pb.NetParameter) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every input, from any of the three deploy styles (Input layers included)."""
    inputs: list[tuple[str, tuple[int, ...]]] = []
    names = list(net.input)
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise SpecError(f"net {net.name!r}: {len(names)} inputs but "
                            f"{len(net.input_shape)} input_shape entries")
        inputs += [(n, tuple(int(d) for d in s.dim))
                   for n, s in zip(names, net.input_shape, strict=False)]
    elif names:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(names):
            raise SpecError(f"net {net.name!r}: {len(names)} inputs need {4 * len(names)} "
                            f"input_dim values, got {len(dims)}")
        inputs += [(n, tuple(dims[4 * i:4 * i + 4])) for i, n in enumerate(names)]
    for layer in net.layer:
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            if len(shapes) not in (1, len(layer.top)):
                raise SpecError(f"Input layer {layer.name!r}: {len(layer.top)} tops but "
                                f"{len(shapes)} shapes")
            for i, top in enumerate(layer.top):
                shape = shapes[i] if len(shapes) > 1 else shapes[0] if shapes else None
                if shape is None:
                    raise SpecError(f"Input layer {layer.name!r} gives no shape for {top!r}")
                inputs.append((top, tuple(int(d) for d in shape.dim)))
    return inputs


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
