"""Text files for ``--modality text``: one caption per line, each line one item.

Listing (driver): each file is read once and its line breaks found (numpy); an item is a line's
byte range, so a loader reads a batch's lines with one range read. Items keep the files' order
(the files in the order given, globs sorted) and the lines' order.

Names are 1-based line numbers as an editor shows them: ``1``, ``2``, ... for one file, and
``<file>:<line>`` (the file relative to the files' common folder) for several. Blank lines (empty
or whitespace only) are not items: a trailing or separating blank line is layout, not a caption;
the other lines keep their numbers, so a name always points at its line. A line's ending (``\\n``
or ``\\r\\n``) is not part of the caption; a line that is not UTF-8 is an error row (``decode``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Listing, Opened, SourceKind

_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\v\f")] = True
GAP_BYTES = 1 << 20  # lines further apart than this in one batch are read with separate reads


def text_files(source: str) -> list[str]:
    """The text files one source names: a file, or a glob of files; SpecError otherwise."""
    if glob.has_magic(source) and not storage.exists(source):
        found = storage.glob_any(source)
        if not found:
            raise SpecError(f"source {storage.redact(source)} matches no file")
        return found
    if storage.isdir(source):
        raise SpecError(f"source {storage.redact(source)} is a folder; --modality text reads "
                        "text files (one caption per line) or Parquet tables (--text-column)")
    if not storage.exists(source):
        raise SpecError(f"source {storage.redact(source)} does not exist")
    return [source]


def _lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line numbers, starts, sizes) of the non-blank lines of ``data``, endings excluded."""
    raw = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(raw == 10)
    starts = np.concatenate([[0], breaks + 1]).astype(np.int64)
    ends = np.concatenate([breaks, [len(raw)]]).astype(np.int64)
    if len(starts) > 1 and starts[-1] == len(raw):  # the file ends with a line break
        starts, ends = starts[:-1], ends[:-1]
    # a line's visible characters: its bytes minus its white space, by a running count
    visible = np.concatenate([[0], np.cumsum(~_SPACE[raw])])
    keep = visible[ends] - visible[starts] > 0
    cr = (ends > starts) & (raw[np.maximum(ends - 1, 0)] == 13) if len(raw) else ends > starts
    ends = ends - cr  # a \r\n ending
    numbers = np.flatnonzero(keep).astype(np.int64) + 1
    return numbers, starts[keep], (ends - starts)[keep]


def list_lines(files: Sequence[str]) -> Listing:
    """Every non-blank line of ``files`` (see the module docstring); SpecError if none."""
    listing = Listing(names=[], kind=Kind.LINE, containers=[storage.redact(f) for f in files])
    if len(files) > 1:
        from .files import common_root

        parents = [os.fsencode(f.rsplit("/", 1)[0]) for f in files]
        root = os.fsdecode(common_root(parents))
    starts, sizes, containers = [], [], []
    for index, path in enumerate(files):
        where = storage.redact(path)
        try:
            data = storage.read_range(path, 0, None)
        except OSError as exc:
            raise SpecError(f"source {where} cannot be read: "
                            f"{exc.strerror or type(exc).__name__}") from None
        if b"\0" in data[:4096]:
            raise SpecError(f"source {where} is not a text file (one caption per line)")
        numbers, start, size = _lines(data)
        if len(files) == 1:
            listing.names += [str(n).encode() for n in numbers.tolist()]
        else:
            rel = (os.path.relpath(path, root) if not storage.is_url(path)
                   else path[len(root):].lstrip("/"))
            listing.names += [f"{rel}:{n}".encode() for n in numbers.tolist()]
        starts.append(start)
        sizes.append(size)
        containers.append(np.full(len(numbers), index, dtype=np.int32))
    if not listing.names:
        raise SpecError(f"source {storage.redact(files[0])} has no text lines")
    listing.start = np.concatenate(starts)
    listing.size = np.concatenate(sizes)
    listing.container = np.concatenate(containers)
    listing.options = {"text": True}
    return listing


def open_line_run(refs: Sequence[ItemRef]) -> list[Any]:
    """The lines ``refs`` (of one file) as ``Opened`` (the line's bytes), reading each run of
    nearby lines with one range read; a read failure is an ``ItemError`` for each of its lines."""
    out: list[Any] = []
    run: list[ItemRef] = []
    for ref in refs:
        if run and (ref.start < run[-1].start
                    or ref.start - (run[-1].start + run[-1].size) > GAP_BYTES):
            out += _read_run(run)
            run = []
        run.append(ref)
    return out + (_read_run(run) if run else [])


def _read_run(run: list[ItemRef]) -> list[Any]:
    location = str(run[0].location)
    lo, hi = run[0].start, max(r.start + r.size for r in run)
    try:
        data = storage.retrying(storage.redact(location),
                                lambda: storage.read_range(location, lo, hi))
        if len(data) < hi - lo:
            raise OSError(0, "the file is shorter than when it was listed")
    except OSError as exc:
        return [storage.read_error(location, exc)] * len(run)
    return [Opened(data[r.start - lo:r.start - lo + r.size]) for r in run]


def list_text_files(sources: list[str], options: dict[str, Any]) -> InputList:
    """The lines of the text files ``sources`` name (files or globs), in the order given."""
    files = [f for s in sources for f in text_files(s)]
    if len(set(files)) != len(files):
        raise SpecError("a text file is named twice in the sources")
    if not storage.is_url(files[0]):
        files = [os.path.abspath(f) for f in files]
    return InputList.from_listing(list_lines(files))


KIND = SourceKind(Kind.LINE, "text file", suffix="", reads=(), modalities=("text",),
                  list=list_text_files, opener=lambda options: open_line_run)
