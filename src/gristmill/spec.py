"""The job spec: one frozen, typed description of a job.

The CLI, the Python API and every engine build the same `JobSpec`; `gristmill.job.prepare` resolves
what the user left to defaults (model preset, device list, worker count, batch size) and validates
it before any process starts. The resolved spec is saved as `OUT/job.json`; `identity()` is the part
that decides the output, so a rerun with a different identity into the same OUT is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import SpecError

ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]
EngineName = Literal["local", "ray"]
Precision = Literal["fp32", "fp16", "bf16"]

SPEC_VERSION = 1
_RAY_ADDRESS = re.compile(r"auto|ray://[\w.\-]+(:\d+)?|[\w.\-]+:\d+")


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes one row of a batch.

    Pixels are taken in 0..255 units: ``out = (pixel - mean) / std`` per channel, after the channel
    order is applied, so ``mean``/``std`` are given in the model's channel order. ``resize`` is the
    shorter side (an int) or an exact ``(height, width)``; ``crop`` is a centre crop. Any field left
    as None takes the model's preset.

    Example: the Caffe convention (BGR, mean subtraction, raw 0..255 scale)::

        Preprocess(resize=(256, 256), crop=(224, 224), mean=(104.0, 117.0, 123.0),
                   std=(1.0, 1.0, 1.0), channel_order="BGR")
    """

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: ChannelOrder | None = None
    layout: Layout | None = None

    def over(self, preset: Preprocess) -> Preprocess:
        """These settings where given, the preset's elsewhere."""
        merged = {
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None
            else getattr(preset, f.name)
            for f in dataclasses.fields(self)
        }
        return Preprocess(**merged)

    def complete(self) -> Preprocess:
        """Fill what neither the user nor the model set, then check the result is usable."""
        p = Preprocess(
            resize=self.resize,
            crop=self.crop,
            mean=self.mean if self.mean is not None else (0.0, 0.0, 0.0),
            std=self.std if self.std is not None else (1.0, 1.0, 1.0),
            channel_order=self.channel_order or "RGB",
            layout=self.layout or "NCHW",
        )
        if p.crop is None and not isinstance(p.resize, tuple):
            raise SpecError("preprocessing needs a fixed size: give --crop HxW or --resize HxW")
        for name, size in (("resize", p.resize), ("crop", p.crop)):
            values = size if isinstance(size, tuple) else (size,) if size is not None else ()
            if any(int(v) <= 0 for v in values):
                raise SpecError(f"--{name} must be positive, got {size}")
        if any(s == 0 for s in p.std or ()):
            raise SpecError(f"--std must not contain zero, got {p.std}")
        return p

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of one preprocessed image."""
        if self.crop is not None:
            return self.crop
        assert isinstance(self.resize, tuple)
        return self.resize

    def item_shape(self) -> tuple[int, int, int]:
        h, w = self.size
        return (3, h, w) if (self.layout or "NCHW") == "NCHW" else (h, w, 3)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run.

    ``ref`` is a bundled model name (``efficientnet-lite0``), a file (``.onnx``, a TorchScript
    ``.pt``/``.ts``, an exported program ``.pt2``, a Caffe ``.prototxt``) or a factory
    ``package.module:function`` returning a ``torch.nn.Module``. ``weights`` is the Caffe
    ``.caffemodel`` or a state dict for a factory model. ``trusted_pickle`` allows full pickle loads
    of torch files (off: weights are loaded with ``weights_only=True``).
    """

    ref: str = "efficientnet-lite0"
    weights: str | None = None
    mean_file: str | None = None
    trusted_pickle: bool = False


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs, as plain data. Zero means "choose for me" for the sizing fields.

    Example::

        spec = JobSpec(sources=("photos/",), out="features/", outputs=("features",))
    """

    sources: tuple[str, ...]
    out: str
    model: ModelSpec = field(default_factory=ModelSpec)
    outputs: tuple[str, ...] = ()
    preprocess: Preprocess = field(default_factory=Preprocess)
    batch_size: int = 0
    shard_size: int = 1024
    workers: int = 0
    device: str = "auto"
    loaders: int = 0
    threads: int = 0
    slots: int = 0
    overwrite: bool = False
    max_attempts: int = 3
    stall_timeout: float = 600.0
    max_image_pixels: int = 178_956_970
    engine: EngineName = "local"
    ray_address: str | None = None
    progress: bool = True
    progress_jsonl: str = ""  # --progress jsonl: "-" streams events to stderr, else to this file
    precision: Precision = "fp32"

    def check(self) -> None:
        """Reject values that can never work; raises SpecError with a one-line message."""
        if not self.sources:
            raise SpecError("no SOURCE given: name a folder, a list file or a glob pattern")
        if not self.out:
            raise SpecError("no output folder given: use -o OUT")
        for name in ("batch_size", "workers", "loaders", "threads", "slots"):
            value = getattr(self, name)
            if value < 0:
                raise SpecError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.shard_size < 1:
            raise SpecError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.max_attempts < 1:
            raise SpecError(f"--max-attempts must be >= 1, got {self.max_attempts}")
        if self.stall_timeout <= 0:
            raise SpecError(f"--stall-timeout must be > 0, got {self.stall_timeout}")
        if self.engine not in ("local", "ray"):
            raise SpecError(f"--engine must be 'local' or 'ray', got {self.engine!r}")
        if self.ray_address is not None:
            if self.engine != "ray":
                raise SpecError("--ray-address is only used with --engine ray")
            if not _RAY_ADDRESS.fullmatch(self.ray_address):
                raise SpecError("--ray-address must be auto, ray://host[:port] or host:port, "
                                f"got {self.ray_address!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise SpecError(f"--precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.progress_jsonl not in ("", "-") and not os.path.isdir(
                os.path.dirname(os.path.abspath(self.progress_jsonl))):
            raise SpecError(f"--progress jsonl={self.progress_jsonl}: its folder does not exist")
        if len(set(self.outputs)) != len(self.outputs):
            raise SpecError(f"--outputs names a dataset twice: {','.join(self.outputs)}")

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output; two specs with equal identity make the same files.

        In JSON form (tuples become lists) so it compares equal to the copy saved in job.json.
        """
        # precision changes the numbers; fp32 is left out so existing jobs keep their identity
        extra = {"precision": self.precision} if self.precision != "fp32" else {}
        return json.loads(json.dumps(extra | {
            "version": SPEC_VERSION,
            "model": dataclasses.asdict(self.model) | {"trusted_pickle": None},
            "outputs": list(self.outputs),
            "preprocess": dataclasses.asdict(self.preprocess),
            "shard_size": self.shard_size,
            "max_image_pixels": self.max_image_pixels,
        }))

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        data["model"] = ModelSpec(**data.get("model", {}))
        pre = {k: tuple(v) if isinstance(v, list) else v
               for k, v in data.get("preprocess", {}).items()}
        data["preprocess"] = Preprocess(**pre)
        for key in ("sources", "outputs"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)
