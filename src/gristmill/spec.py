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
from .sinks import DEFAULT_FORMAT

ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]
EngineName = str  # a key of engines.base.BACKENDS
Precision = Literal["fp32", "fp16", "bf16"]
Resample = Literal["bilinear", "bicubic"]
OutputFormat = str  # a key of sinks.SINKS
Modality = Literal["image", "text", "image+text"]

SPEC_VERSION = 1
_CREDENTIALS = re.compile(r"^[a-zA-Z][\w+.\-]*://[^/@]*@")
_RAY_ADDRESS = re.compile(r"auto|ray://[\w.\-]+(:\d+)?|[\w.\-]+:\d+")


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes one row of a batch.

    Pixels are taken in 0..255 units: ``out = (pixel - mean) / std`` per channel, after the channel
    order is applied, so ``mean``/``std`` are given in the model's channel order. ``resize`` is the
    shorter side (an int) or an exact ``(height, width)``; ``crop`` is a centre crop; ``resample``
    the filter of the resize (``bilinear``, or ``bicubic`` as CLIP's processor uses). Any field
    left as None takes the model's preset.

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
    resample: Resample | None = None

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
            resample=self.resample or "bilinear",
        )
        if p.resample not in ("bilinear", "bicubic"):
            raise SpecError(f"--resample must be bilinear or bicubic, got {p.resample!r}")
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


def _without_defaults(fields: dict[str, Any], defaults: dict[str, tuple]) -> dict[str, Any]:
    """``fields`` less the newer ones left at their defaults: a job made before they existed keeps
    its identity (and resumes)."""
    return {k: v for k, v in fields.items() if not (k in defaults and v in defaults[k])}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run.

    ``ref`` is a bundled model name (``efficientnet-lite0``), a file (``.onnx``, a TorchScript
    ``.pt``/``.ts``, an exported program ``.pt2``, a Caffe ``.prototxt``) or a factory
    ``package.module:function`` returning a ``torch.nn.Module``, a callable class
    ``package.module:Class``, or a Hugging Face snapshot ``hf:PATH``. ``weights`` is the Caffe
    ``.caffemodel`` or a state dict for a factory model (``.safetensors``, mapped, or a torch
    file). ``trusted_pickle`` allows full pickle loads
    of torch files (off: weights are loaded with ``weights_only=True``). ``normalize`` makes
    embedding outputs (``image_embeds``, ``text_embeds``) unit vectors, where the backend has them.
    ``allow_python_layers`` lets a Caffe net's ``type: "Python"`` layers import and run their
    modules (off: refused).

    In a job of several models (``JobSpec.models``) each has a ``name`` (its outputs are stored as
    ``NAME/OUTPUT``), its own ``preprocess`` overrides (None: the job's and the preset's), and a
    head has an ``input``: ``OTHER/OUTPUT``, another model's output rows, fed instead of pixels.
    """

    ref: str = "efficientnet-lite0"
    weights: str | None = None
    mean_file: str | None = None
    trusted_pickle: bool = False
    normalize: bool = False
    allow_python_layers: bool = False
    name: str = ""
    input: str = ""
    preprocess: Preprocess | None = None


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
    format: OutputFormat = DEFAULT_FORMAT
    append: bool = False  # list the sources again; only inputs not yet in OUT get new shards
    retry_errors: bool = False  # compute again the inputs whose error rows still stand
    image_key: str = ""  # tars: the member extension holding the image (default: the first image)
    image_column: str = ""  # Parquet: the column of image bytes (default: auto-detected)
    path_column: str = ""  # Parquet: a column of image paths/URLs, relative to the table
    key_column: str = ""  # Parquet: the names (default: ``key`` if present, else <file>:<row>)
    keep_columns: tuple[str, ...] = ()  # metadata carried next to the outputs
    # what the inputs are: images, or text (captions: a text file's lines, a Parquet text column)
    modality: Modality = "image"
    text_column: str = ""  # Parquet, --modality text: the captions (default: caption or text)
    # several named models in one pass (``--model NAME=REF`` given several times); then ``model``
    # stays unset and ``outputs`` are ``NAME/OUTPUT`` (see ``named.py``)
    models: tuple[ModelSpec, ...] = ()

    def source_options(self) -> dict[str, Any]:
        """The options that tell ``sources.list_inputs`` how to read files, tars and tables."""
        options = {"image_key": self.image_key.lower().lstrip("."),
                   "image_column": self.image_column, "path_column": self.path_column,
                   "key_column": self.key_column, "keep_columns": self.keep_columns,
                   "text_column": self.text_column, "modality": self.modality}
        if self.modality == "image+text":  # images read with their caption carried as a column
            keep = tuple(dict.fromkeys((*self.keep_columns, self.text_column))) if (
                self.text_column) else self.keep_columns
            options |= {"modality": "image", "text_column": "", "keep_columns": keep}
        return options

    @property
    def model_label(self) -> str:
        """The model(s) in words: ``REF``, or ``NAME=REF,...`` for several."""
        return ",".join(f"{m.name}={m.ref}" for m in self.models) or self.model.ref

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
        from .engines.base import check as check_engine

        check_engine(self)
        if self.ray_address is not None and not _RAY_ADDRESS.fullmatch(self.ray_address):
            raise SpecError("--ray-address must be auto, ray://host[:port] or host:port, "
                            f"got {self.ray_address!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise SpecError(f"--precision must be fp32, fp16 or bf16, got {self.precision!r}")
        for source in self.sources:
            if _CREDENTIALS.match(source):
                raise SpecError("a source URL must not hold credentials: give them the storage "
                                "library's way (environment, ~/.aws, fsspec config)")
        if self.image_column and self.path_column:
            raise SpecError("give --image-column or --path-column, not both")
        self._check_modality()
        if len(set(self.keep_columns)) != len(self.keep_columns):
            raise SpecError(f"--keep-columns names a column twice: {','.join(self.keep_columns)}")
        if self.progress_jsonl not in ("", "-") and not os.path.isdir(
                os.path.dirname(os.path.abspath(self.progress_jsonl))):
            raise SpecError(f"--progress jsonl={self.progress_jsonl}: its folder does not exist")
        if len(set(self.outputs)) != len(self.outputs):
            raise SpecError(f"--outputs names a dataset twice: {','.join(self.outputs)}")
        if self.models:
            from .named import check_models

            if self.model != ModelSpec():
                raise SpecError("give every model a name (--model NAME=REF) or give one --model")
            check_models(self.models, self.outputs, self.modality)
        self._check_output()

    def _check_modality(self) -> None:
        if self.modality not in ("image", "text", "image+text"):
            raise SpecError(f"--modality must be image, text or image+text, got "
                            f"{self.modality!r}")
        if self.modality == "image+text":  # images with the preprocessing, captions beside them
            return
        if self.modality == "image":
            if self.text_column:
                raise SpecError("--text-column reads captions: give --modality text")
            return
        for name in ("image_key", "image_column", "path_column"):
            if getattr(self, name):
                raise SpecError(f"--{name.replace('_', '-')} reads images; --modality text "
                                "reads text (a text file's lines, or --text-column)")
        given = [f.name for f in dataclasses.fields(self.preprocess)
                 if getattr(self.preprocess, f.name) is not None]
        if given or self.model.mean_file:
            flag = given[0] if given else "mean_file"
            raise SpecError(f"--{flag.replace('_', '-')} is image preprocessing; "
                            "--modality text tokenizes with the model's tokenizer")

    def _check_output(self) -> None:
        from . import sinks
        from .sinks import rules  # not the sink itself: its numpy and h5py come after the check
        from .store import is_remote

        if self.format not in sinks.FORMATS:
            raise SpecError(f"--format must be {', '.join(sinks.FORMATS)}, got {self.format!r}")
        if self.overwrite and (self.append or self.retry_errors):
            raise SpecError("--overwrite starts over; it cannot be combined with --append or "
                            "--retry-errors")
        if is_remote(self.out) and self.format not in rules.REMOTE:
            usable = [f for f in sinks.FORMATS if f in rules.REMOTE]
            raise SpecError(f"-o {self.out}: --format {self.format} output needs a local folder; "
                            f"use {' or '.join('--format ' + f for f in usable)} for object "
                            "storage")
        rules.check(self.format, self.outputs, self.keep_columns)
        if self.models:  # NAME/OUTPUT: each NAME is a group or a folder of the output too
            rules.check(self.format, [m.name for m in self.models], self.keep_columns)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output; two specs with equal identity make the same files.

        In JSON form (tuples become lists) so it compares equal to the copy saved in job.json.
        """
        # precision changes the numbers; fp32 is left out so existing jobs keep their identity
        extra = {"precision": self.precision} if self.precision != "fp32" else {}
        reading = {k: v for k, v in self.source_options().items() if v and k != "modality"}
        if self.modality == "image+text":
            reading["text_column"] = self.text_column
        if reading:  # left out when unset, so loose-file jobs keep their identity
            extra["reading"] = reading
        if self.modality != "image":  # likewise: image jobs keep their identity
            extra["modality"] = self.modality
        if self.format != DEFAULT_FORMAT:  # likewise: jobs of the first format keep theirs
            extra["format"] = self.format
        if self.models:  # likewise: one-model jobs keep their identity
            extra["models"] = [_model_identity(m) for m in self.models]
        return json.loads(json.dumps(extra | {
            "version": SPEC_VERSION,
            # permissions do not change the output (and older jobs keep their identity)
            "model": _model_identity(self.model),
            "outputs": list(self.outputs),
            "preprocess": _without_defaults(dataclasses.asdict(self.preprocess),
                                            {"resample": ("bilinear", None)}),
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
        data["model"] = _model_from_dict(data.get("model", {}))
        data["models"] = tuple(_model_from_dict(m) for m in data.get("models", ()))
        data["preprocess"] = _preprocess_from_dict(data.get("preprocess", {}))
        for key in ("sources", "outputs", "keep_columns"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


def _model_identity(model: ModelSpec) -> dict[str, Any]:
    # permissions do not change the output (and older jobs keep their identity); so do the
    # several-model fields left unset
    defaults = {"normalize": (False,), "name": ("",), "input": ("",), "preprocess": (None,)}
    return {k: v for k, v in _without_defaults(dataclasses.asdict(model), defaults).items()
            if k != "allow_python_layers"} | {"trusted_pickle": None}


def _preprocess_from_dict(data: dict[str, Any]) -> Preprocess:
    return Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _model_from_dict(data: dict[str, Any]) -> ModelSpec:
    data = dict(data)
    if data.get("preprocess") is not None:
        data["preprocess"] = _preprocess_from_dict(data["preprocess"])
    return ModelSpec(**data)
