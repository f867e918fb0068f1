"""The command line: ``gristmill run SOURCE... -o OUT``, ``plan`` (the same options: what a run
would do, writing nothing), ``status OUT``, ``report OUT`` and ``inspect OUT``.

Exit codes: 0 done (per-item errors are data, not failure), 1 the job ran but shards failed
(rerun to resume), 2 a bad command line, model, path or option, or an OUT another live run holds
(one line, nothing ran), 130 stopped by Ctrl-C or SIGTERM (rerun to resume).

stderr holds gristmill's own one-line messages and the summary, never a traceback: ``-v``/``-vv``
or ``--log-level`` show more, ``--log-file PATH`` keeps everything with tracebacks (see
``logs.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence

from . import logs, sinks
from .cli_job import add_job_options, spec_from_args
from .errors import GristmillError, JobFailed, SpecError

log = logging.getLogger("gristmill.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"gristmill: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gristmill",
                     description="Run a model over many images into HDF5, Parquet or npy.")
    _logging_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a model over SOURCE... into OUT (resumes if rerun)")
    _logging_options(run, argparse.SUPPRESS)  # accepted after the command too
    add_job_options(run, out_required=True)
    preview = sub.add_parser("plan", help="what `run` would do with these options: inputs, "
                                          "shards, budget, bottleneck, duration; writes nothing")
    _logging_options(preview, argparse.SUPPRESS)
    add_job_options(preview, out_required=False)
    preview.add_argument("--json", action="store_true", help="print the plan as JSON")
    status = sub.add_parser("status", help="how far the job in OUT is (during or after a run)")
    status.add_argument("out")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    report = sub.add_parser("report", help="rebuild OUT/report.html from OUT")
    report.add_argument("out")
    inspect = sub.add_parser("inspect", help="describe OUT (any format)")
    inspect.add_argument("out")
    return parser


def _logging_options(parser: argparse.ArgumentParser, default: object) -> None:
    def given(value: object) -> object:
        return default if default is argparse.SUPPRESS else value

    parser.add_argument("-v", "--verbose", action="count", default=given(0),
                        help="more messages (-vv: debug)")
    parser.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, default=given(None),
                        help="messages shown on stderr (default WARNING)")
    parser.add_argument("--log-file", default=given(None), metavar="PATH",
                        help="also append every message, with tracebacks, to PATH")


def _log_setup(args: argparse.Namespace) -> logs.LogSetup:
    level = (getattr(logging, args.log_level) if args.log_level
             else logging.WARNING - 10 * min(args.verbose, 2))
    return logs.LogSetup(level, args.log_file)


def _inspect(out: str) -> int:
    from .api import open as open_result
    from .ledger import read_job

    fmt = ((read_job(out) or {}).get("spec") or {}).get("format", sinks.DEFAULT_FORMAT)
    with open_result(out) as result:
        print(f"{out}: {fmt}, {len(result.names)} items, {len(result.errors)} errors, "
              f"complete={result.complete}")
        for name, data in result.outputs.items():
            print(f"  {name}: {data.shape} {data.dtype}")
        for name, values in result.columns.items():
            print(f"  column {name}: {len(values)} values")
    if read_job(out) is not None:
        from .duplicates import find
        from .outdir import reopen

        found = find(reopen(out))
        if found is not None:
            print(f"  {found.line()}")
            for d in found.first:
                print(f"    {d.key!r}: {d.count} copies, in {', '.join(d.containers)}")
    return 0


def _look(args: argparse.Namespace) -> int:
    """The commands that only read: plan, status, report."""
    if args.command == "report":
        from .report import write_report

        if not os.path.exists(os.path.join(args.out, "job.json")):
            raise SpecError(f"{args.out} holds no gristmill job (no job.json)")
        print(write_report(args.out))
        return 0
    if args.command == "status":
        from .status import describe, status

        data = status(args.out)
    else:
        from .preview import describe, preview

        spec = spec_from_args(args)
        if not spec.out:  # no OUT named: plan as for a new, empty one
            spec = dataclasses.replace(spec, out=os.path.join(
                tempfile.gettempdir(), f"gristmill-plan-{os.getpid()}-none"))
        data = preview(spec)
        if not args.out:
            data["out"] = None
    print(json.dumps(data, indent=2) if args.json else describe(data))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.configure(_log_setup(args))
    except OSError as exc:
        print(f"gristmill: error: --log-file {args.log_file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if args.command == "inspect":
            return _inspect(args.out)
        if args.command in ("plan", "status", "report"):
            return _look(args)
        from .api import execute

        report = execute(spec_from_args(args), command=shlex.join(
            ["gristmill", *(sys.argv[1:] if argv is None else argv)]))
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
    except Exception as exc:  # a bug: one line here, the traceback in --log-file
        log.debug("unexpected error", exc_info=True)
        print(f"gristmill: failed: unexpected {type(exc).__name__}: {exc} (rerun with "
              "--log-file PATH to keep the traceback for a bug report)", file=sys.stderr)
        return 1
    print(report.summary(), file=sys.stderr)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
