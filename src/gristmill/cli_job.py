"""The command line's job options (``run`` and ``plan``) and the ``JobSpec`` built from them.

Each option maps onto a ``JobSpec`` field; values are parsed here (``HxW`` sizes, ``r,g,b``
triples, per-model ``NAME=VALUE``) and checked by ``JobSpec.check``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from . import sinks
from .engines.base import BACKENDS
from .errors import SpecError
from .named import parse_model, split_named
from .spec import JobSpec, ModelSpec, Preprocess


def _floats(text: str, n: int = 3) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {n} numbers like 1,2,3, got {text!r}") from None
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"expected {n} numbers like 1,2,3, got {text!r}")
    return values


def _size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None


def _positive(text: str) -> int:
    """An int >= 1: on the command line 0 is an error, not "choose for me" as in the API."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _hw(text: str) -> tuple[int, int]:
    size = _size(text)
    return size if isinstance(size, tuple) else (size, size)


def _progress(text: str) -> str:
    if text in ("bar", "none", "jsonl") or (text.startswith("jsonl=") and len(text) > 6):
        return text
    raise argparse.ArgumentTypeError(f"expected bar, none, jsonl or jsonl=PATH, got {text!r}")


def add_job_options(run: argparse.ArgumentParser, *, out_required: bool) -> None:
    """The options of ``run`` and ``plan``: everything a ``JobSpec`` holds."""
    run.add_argument("sources", nargs="+", metavar="SOURCE",
                     help="a folder (recursive), a text file listing paths, a glob pattern, "
                          "webdataset tars ('data/{00000..00099}.tar'), Parquet tables; "
                          "with --modality text: text files of captions, one per line; "
                          "local or s3:// gs:// az:// URLs")
    run.add_argument("-o", "--out", required=out_required,
                     help="output folder, or s3://bucket/prefix (with --format parquet or npy)")
    run.add_argument("--format", choices=sinks.FORMATS, default=sinks.DEFAULT_FORMAT,
                     help="hdf5: features.h5 view; parquet: one table; npy: arrays + metadata")
    run.add_argument("--model", action="append", metavar="[NAME=]REF",
                     help="bundled name, .onnx/.pt/.pt2/.prototxt file, hf:SNAPSHOT, "
                     "package.module:factory or package.module:Class (callable class); "
                     "several models in one pass: NAME=REF each time (outputs NAME/OUTPUT), "
                     "NAME=REF@OTHER/OUTPUT for a head fed OTHER's output rows")
    run.add_argument("--weights", action="append", metavar="[NAME=]PATH",
                     help="Caffe .caffemodel, or a state dict (.safetensors or torch) for a "
                     "factory model")
    run.add_argument("--outputs", default="",
                     help="comma-separated outputs to store (default: the model's own outputs; "
                     "NAME/OUTPUT with several models)")
    run.add_argument("--batch-size", type=_positive, help="default: 32 on CPU, 128 on GPU")
    run.add_argument("--shard-size", type=int, default=1024, help="inputs per output shard")
    run.add_argument("--workers", type=int, default=0, help="default: one per GPU, or 1 on CPU")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:0,1")
    run.add_argument("--loaders", type=int, default=0, help="loader processes per worker")
    run.add_argument("--threads", type=int, default=0, help="model threads per worker")
    run.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                     help="run torch models under autocast at this precision (outputs: float32)")
    run.add_argument("--modality", choices=["image", "text", "image+text"], default="image",
                     help="text: embed captions (a text file's lines, or a Parquet "
                          "--text-column) with a dual encoder's text tower (hf: CLIP, SigLIP); "
                          "image+text: both towers on image-caption pairs (tars, Parquet), "
                          "with clip_score")
    run.add_argument("--normalize", action="store_true",
                     help="store embeddings (image_embeds, text_embeds) as unit vectors")
    run.add_argument("--overwrite", action="store_true", help="replace another job's output")
    run.add_argument("--append", action="store_true",
                     help="list the sources again; only inputs new to OUT get new shards")
    run.add_argument("--retry-errors", action="store_true",
                     help="compute again the inputs recorded in errors (their rows are replaced)")
    pre = run.add_argument_group("preprocessing (default: the model's preset; NAME=VALUE for "
                                 "one of several models)")
    pre.add_argument("--resize", type=_named(_size), action="append",
                     help="shorter side N, or exact HxW")
    pre.add_argument("--crop", type=_named(_hw), action="append", help="centre crop HxW (or N)")
    pre.add_argument("--mean", type=_named(_floats), action="append",
                     help="per-channel mean in 0..255 units, model order")
    pre.add_argument("--std", type=_named(_floats), action="append",
                     help="per-channel divisor in 0..255 units")
    pre.add_argument("--scale", type=_named(float), action="append",
                     help="multiply after mean subtraction (1/std)")
    pre.add_argument("--mean-file", action="append", help="Caffe .binaryproto mean image")
    order = pre.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="channel_order", action="store_const", const="BGR")
    order.add_argument("--rgb", dest="channel_order", action="store_const", const="RGB")
    pre.add_argument("--layout", type=_named(_choice("NCHW", "NHWC")), action="append",
                     help="NCHW or NHWC")
    pre.add_argument("--resample", type=_named(_choice("bilinear", "bicubic")), action="append",
                     help="resize filter: bilinear or bicubic")
    ops = run.add_argument_group("operations")
    ops.add_argument("--max-attempts", type=int, default=3, help="tries per shard before failing")
    ops.add_argument("--stall-timeout", type=float, default=600.0,
                     help="seconds without progress before a worker is replaced")
    ops.add_argument("--max-image-pixels", type=int, default=178_956_970,
                     help="larger images are recorded as errors (decompression-bomb guard)")
    ops.add_argument("--engine", choices=list(BACKENDS), default="local")
    ops.add_argument("--ray-address", help="auto, ray://host:port or host:port")
    ops.add_argument("--trusted-pickle", action="store_true",
                     help="allow full pickle loads of torch weights (only for files you trust)")
    ops.add_argument("--allow-python-layers", action="store_true",
                     help="let a Caffe net's Python layers import and run their modules")
    ops.add_argument("--no-progress", action="store_true", help="no progress bar")
    ops.add_argument("--progress", type=_progress, default="bar", metavar="MODE",
                     help="bar (default), none, jsonl (one JSON event per line on stderr) or "
                          "jsonl=PATH (to a file)")
    ops.add_argument("--report", help="also write the run report as JSON to this file")
    src = run.add_argument_group("tar, Parquet and text sources")
    src.add_argument("--image-key", default="", help="tars: the member extension of the image "
                                                     "(default: the first image member)")
    src.add_argument("--image-column", default="",
                     help="Parquet: the column of image bytes (default: jpg/png/webp/image/img)")
    src.add_argument("--path-column", default="",
                     help="Parquet: a column of image paths or URLs, relative to the table")
    src.add_argument("--key-column", default="",
                     help="Parquet: the column naming rows (default: key, else <file>:<row>)")
    src.add_argument("--text-column", default="",
                     help="Parquet, --modality text: the column of captions (default: "
                          "caption/text/txt); --modality image+text: the captions' column or "
                          "tar .json field (default: caption, or a tar's .txt member)")
    src.add_argument("--keep-columns", default="",
                     help="comma-separated metadata carried next to the outputs (Parquet "
                          "columns; tar .txt/.cls members or .json fields)")


def _named(parse: Callable[[str], Any]) -> Callable[[str], tuple[str, Any]]:
    """A per-model option's value: ``NAME=VALUE`` or a plain ``VALUE`` (every model)."""
    def named_value(text: str) -> tuple[str, Any]:
        try:
            name, value = split_named(text, "option")
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return name, parse(value)

    named_value.__name__ = getattr(parse, "__name__", "value")  # argparse's error names it
    return named_value


def _choice(*choices: str) -> Callable[[str], str]:
    def choice(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(choices)}, got {text!r}")
        return text

    return choice


def _per_model(args: argparse.Namespace, names: set[str]) -> dict[str, dict[str, Any]]:
    """The preprocessing and weights options as {model name ("" for all): {field: value}}; a
    later value wins, as for any repeated option."""
    found: dict[str, dict[str, Any]] = {}
    for flag in ("resize", "crop", "mean", "std", "scale", "layout", "resample"):
        for name, value in getattr(args, flag) or ():
            found.setdefault(name, {})[flag] = value
    for flag in ("weights", "mean_file"):
        for text in getattr(args, flag) or ():
            name, value = split_named(text, flag.replace("_", "-"))
            name, value = (name, value) if name in names else ("", text)  # a path with '='
            found.setdefault(name, {})[flag] = value
    unknown = sorted(set(found) - names - {""})
    if unknown:
        raise SpecError(f"{unknown[0]}=...: no --model is named {unknown[0]!r}")
    for options in found.values():
        scale = options.pop("scale", None)
        if scale is not None:
            if "std" in options:
                raise SpecError("give --std or --scale, not both")
            if scale == 0:
                raise SpecError("--scale must not be zero")
            options["std"] = (1.0 / scale,) * 3
    return found


def _models(args: argparse.Namespace) -> tuple[ModelSpec, tuple[ModelSpec, ...], Preprocess]:
    """(the model, the named models, the job's preprocessing) from the command line."""
    parsed = [parse_model(ref) for ref in args.model or ["efficientnet-lite0"]]
    if not any(name for name, _, _ in parsed):  # unnamed: the last --model wins, as it always did
        parsed = parsed[-1:]
    several = len(parsed) > 1 or bool(parsed[0][0])
    options = _per_model(args, {p[0] for p in parsed if p[0]} if several else set())
    common = options.get("", {})
    pre_fields = {f.name for f in dataclasses.fields(Preprocess)}
    preprocess = Preprocess(channel_order=args.channel_order,
                            **{k: v for k, v in common.items() if k in pre_fields})
    flags = dict(trusted_pickle=args.trusted_pickle, normalize=args.normalize,
                 allow_python_layers=args.allow_python_layers)
    if not several:
        return (ModelSpec(ref=parsed[0][1], weights=common.get("weights"),
                          mean_file=common.get("mean_file"), **flags), (), preprocess)
    if common.get("weights") or common.get("mean_file"):
        raise SpecError("with several models give --weights NAME=PATH (--mean-file NAME=PATH)")
    models = []
    for name, ref, source in parsed:
        own = options.get(name, {})
        pre = Preprocess(**{k: v for k, v in own.items() if k in pre_fields})
        models.append(ModelSpec(ref=ref, name=name, input=source, weights=own.get("weights"),
                                mean_file=own.get("mean_file"), **flags,
                                preprocess=pre if pre != Preprocess() else None))
    return ModelSpec(), tuple(models), preprocess


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    model, models, preprocess = _models(args)
    return JobSpec(
        sources=tuple(args.sources), out=args.out or "", model=model, models=models,
        outputs=tuple(o.strip() for o in args.outputs.split(",") if o.strip()),
        preprocess=preprocess,
        batch_size=args.batch_size or 0, shard_size=args.shard_size, workers=args.workers,
        device=args.device, loaders=args.loaders, threads=args.threads,
        precision=args.precision, format=args.format, append=args.append,
        retry_errors=args.retry_errors, overwrite=args.overwrite, max_attempts=args.max_attempts,
        stall_timeout=args.stall_timeout, max_image_pixels=args.max_image_pixels,
        engine=args.engine, ray_address=args.ray_address,
        image_key=args.image_key, image_column=args.image_column, path_column=args.path_column,
        key_column=args.key_column, modality=args.modality, text_column=args.text_column,
        keep_columns=tuple(c.strip() for c in args.keep_columns.split(",") if c.strip()),
        progress=(args.progress == "bar" and not args.no_progress and sys.stderr.isatty()),
        progress_jsonl=("-" if args.progress == "jsonl" else args.progress[6:]
                        if args.progress.startswith("jsonl=") else ""),
    )
