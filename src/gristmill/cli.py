"""The command line: ``gristmill run SOURCE... -o OUT`` and ``gristmill inspect OUT``.

Exit codes: 0 done (per-item errors are data, not failure), 1 the job ran but shards failed or it
was stopped (rerun to resume), 2 a bad command line, model, path or option (one line, nothing ran).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .errors import GristmillError, JobFailed, SpecError
from .spec import JobSpec, ModelSpec, Preprocess


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"gristmill: error: {message}\n")
        raise SystemExit(2)


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gristmill",
                     description="Run a model over many images into HDF5, Parquet or npy.")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a model over SOURCE... into OUT (resumes if rerun)")
    run.add_argument("sources", nargs="+", metavar="SOURCE",
                     help="a folder (recursive), a text file listing paths, or a glob pattern")
    run.add_argument("-o", "--out", required=True,
                     help="output folder, or s3://bucket/prefix (with --format parquet or npy)")
    run.add_argument("--format", choices=["hdf5", "parquet", "npy"], default="hdf5",
                     help="hdf5: features.h5 view; parquet: one table; npy: arrays + metadata")
    run.add_argument("--model", default="efficientnet-lite0",
                     help="bundled name, .onnx/.pt/.pt2/.prototxt file, or package.module:factory")
    run.add_argument("--weights", help="Caffe .caffemodel, or a state dict for a factory model")
    run.add_argument("--outputs", default="",
                     help="comma-separated outputs to store (default: the model's own outputs)")
    run.add_argument("--batch-size", type=_positive, help="default: 32 on CPU, 128 on GPU")
    run.add_argument("--shard-size", type=int, default=1024, help="inputs per output shard")
    run.add_argument("--workers", type=int, default=0, help="default: one per GPU, or 1 on CPU")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:0,1")
    run.add_argument("--loaders", type=int, default=0, help="loader processes per worker")
    run.add_argument("--threads", type=int, default=0, help="model threads per worker")
    run.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                     help="run torch models under autocast at this precision (outputs: float32)")
    run.add_argument("--overwrite", action="store_true", help="replace another job's output")
    run.add_argument("--append", action="store_true",
                     help="list the sources again; only inputs new to OUT get new shards")
    run.add_argument("--retry-errors", action="store_true",
                     help="compute again the inputs recorded in errors (their rows are replaced)")
    pre = run.add_argument_group("preprocessing (default: the model's preset)")
    pre.add_argument("--resize", type=_size, help="shorter side N, or exact HxW")
    pre.add_argument("--crop", type=_hw, help="centre crop HxW (or N)")
    pre.add_argument("--mean", type=_floats, help="per-channel mean in 0..255 units, model order")
    pre.add_argument("--std", type=_floats, help="per-channel divisor in 0..255 units")
    pre.add_argument("--scale", type=float, help="multiply after mean subtraction (1/std)")
    pre.add_argument("--mean-file", help="Caffe .binaryproto mean image")
    order = pre.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="channel_order", action="store_const", const="BGR")
    order.add_argument("--rgb", dest="channel_order", action="store_const", const="RGB")
    pre.add_argument("--layout", choices=["NCHW", "NHWC"])
    ops = run.add_argument_group("operations")
    ops.add_argument("--max-attempts", type=int, default=3, help="tries per shard before failing")
    ops.add_argument("--stall-timeout", type=float, default=600.0,
                     help="seconds without progress before a worker is replaced")
    ops.add_argument("--max-image-pixels", type=int, default=178_956_970,
                     help="larger images are recorded as errors (decompression-bomb guard)")
    ops.add_argument("--engine", choices=["local", "ray"], default="local")
    ops.add_argument("--ray-address", help="auto, ray://host:port or host:port")
    ops.add_argument("--trusted-pickle", action="store_true",
                     help="allow full pickle loads of torch weights (only for files you trust)")
    ops.add_argument("--no-progress", action="store_true", help="no progress bar")
    ops.add_argument("--report", help="also write the run report as JSON to this file")
    inspect = sub.add_parser("inspect", help="describe OUT (any format)")
    inspect.add_argument("out")
    return parser


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    std = args.std
    if args.scale is not None:
        if std is not None:
            raise SpecError("give --std or --scale, not both")
        if args.scale == 0:
            raise SpecError("--scale must not be zero")
        std = (1.0 / args.scale,) * 3
    return JobSpec(
        sources=tuple(args.sources), out=args.out,
        model=ModelSpec(ref=args.model, weights=args.weights, mean_file=args.mean_file,
                        trusted_pickle=args.trusted_pickle),
        outputs=tuple(o.strip() for o in args.outputs.split(",") if o.strip()),
        preprocess=Preprocess(resize=args.resize, crop=args.crop, mean=args.mean, std=std,
                              channel_order=args.channel_order, layout=args.layout),
        batch_size=args.batch_size or 0, shard_size=args.shard_size, workers=args.workers,
        device=args.device, loaders=args.loaders, threads=args.threads,
        precision=args.precision, format=args.format, append=args.append,
        retry_errors=args.retry_errors, overwrite=args.overwrite, max_attempts=args.max_attempts,
        stall_timeout=args.stall_timeout, max_image_pixels=args.max_image_pixels,
        engine=args.engine, ray_address=args.ray_address,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def _inspect(out: str) -> int:
    from .api import open as open_result
    from .ledger import read_job

    fmt = ((read_job(out) or {}).get("spec") or {}).get("format", "hdf5")
    with open_result(out) as result:
        print(f"{out}: {fmt}, {len(result.names)} items, {len(result.errors)} errors, "
              f"complete={result.complete}")
        for name, data in result.outputs.items():
            print(f"  {name}: {data.shape} {data.dtype}")
        for name, values in result.columns.items():
            print(f"  column {name}: {len(values)} values")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="gristmill: %(levelname)s: %(message)s")
    try:
        if args.command == "inspect":
            return _inspect(args.out)
        from .api import execute


        report = execute(spec_from_args(args))
    except SpecError as exc:
        print(f"gristmill: error: {exc}", file=sys.stderr)
        return 2
    except JobFailed as exc:
        if exc.report is not None:
            print(exc.report.summary(), file=sys.stderr)  # type: ignore[attr-defined]
        print(f"gristmill: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gristmill: stopped; committed shards are kept, rerun to resume", file=sys.stderr)
        return 130
    except GristmillError as exc:
        print(f"gristmill: failed: {exc}", file=sys.stderr)
        return 1
    print(report.summary(), file=sys.stderr)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
