"""webdataset tar shards: samples are runs of members sharing a key; a sample's name is its key.

Listing (driver): the tars only, each with its size and version from one listing of its folder
(``storage.stat_all``): no tar byte is read, except the headers of the first tar's first
``SAMPLE_BYTES``, which give the bytes a sample takes, so that each tar's items are estimated from
its size (the weights the plan packs). Each tar is a ``TAR_FILE`` unit.

Expanding (worker, when the tar's shard runs): the tar's headers are walked without reading member
data (``tarheaders``; a remote tar is first copied whole to the worker's spool, one GET); a sample
is the byte range from its first header to the end of its last member's data, so a loader reads a
whole batch of a tar with one contiguous read and splits it in memory. A tar whose size or
version changed since the listing is ``SourceChanged``; one that cannot be read is one error row.
Keys repeated across tars are reported after the run (``duplicates.py``), never merged.

Opening (loader): the image is the member whose extension is ``image_key`` (or, by default, the
first with an image extension); kept columns come from a member of that extension (``txt``, ``cls``)
or from the sample's ``.json`` member. A tar cut short makes its missing samples error rows.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import ItemError, SpecError
from . import storage, tarheaders
from .base import InputList, ItemRef, Kind, Listing, Opened, SourceKind, Unit, UnitKind

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm")
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``data/{000..009}.tar`` and ``{a,b}`` expanded as webdataset and img2dataset write them."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    if ".." in body:
        lo, hi = body.split("..", 1)
        if not (lo.isdigit() and hi.isdigit()):
            raise SpecError(f"source {pattern}: a brace range must be numbers like {{000..099}}")
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [x for option in options for x in expand_braces(head + option + tail)]


def _reader(location: str) -> tuple[Any, Any, int]:
    """(read_at, closer, size) of a tar: pread on a local file, ranged reads on an object."""
    if not storage.is_url(location):
        fd = os.open(location, os.O_RDONLY)
        return (lambda pos, n: os.pread(fd, n, pos)), (lambda: os.close(fd)), os.fstat(fd).st_size
    f = storage.open_file(location)

    def read_at(pos: int, n: int) -> bytes:
        f.seek(pos)
        return f.read(n)

    return read_at, f.close, f.size


def list_tar(location: str, limit: int | None = None) -> tuple[list[str], list[int], list[int]]:
    """(keys, starts, sizes) of the samples of one tar, from its headers only (those starting
    before byte ``limit``, when given); OSError if it cannot be opened."""
    read_at, close, total = _reader(location)
    keys: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    try:
        for member in tarheaders.walk(read_at, end=limit):
            split = tarheaders.split_key(member.name)
            if split is None:
                continue
            end = member.data + member.size
            if keys and keys[-1] == split[0]:
                ends[-1] = end
            else:
                keys.append(split[0])
                starts.append(member.header)
                ends.append(end)
    finally:
        close()
    if limit is None and ends and ends[-1] > total:
        log.warning("tar %s is truncated: its last samples will be error rows",
                    storage.redact(location))
    return keys, starts, [e - s for s, e in zip(starts, ends, strict=True)]


SAMPLE_BYTES = 16 << 20  # the headers the estimate of a sample's bytes walks (first tar only)


def sample_bytes(tar: str, size: int) -> float:
    """The mean bytes a sample takes in ``tar`` (``size`` bytes), from the headers of its first
    ``SAMPLE_BYTES`` (the one tar a plan reads); 0.0 if it has none or cannot be read. A tar
    walked whole counts its padding too, as the sizes of the others do."""
    try:
        _, starts, sizes = list_tar(tar, limit=SAMPLE_BYTES)
    except OSError:
        return 0.0
    if not starts:
        return 0.0
    if size <= SAMPLE_BYTES:
        return size / len(starts)
    return (starts[-1] + sizes[-1] - starts[0]) / len(starts)


def list_tars(tars: Sequence[str], options: dict[str, Any]) -> Listing:
    """One ``TAR_FILE`` unit per tar (see the module doc); SpecError naming a missing tar."""
    stamps = storage.stat_present(list(tars), "tar")
    per = sample_bytes(tars[0], stamps[0][0])
    sizes = np.asarray([st[0] for st in stamps], dtype=np.int64)
    weight = np.maximum(1, np.rint(sizes / per)) if per else np.ones(len(tars))
    names = [storage.redact(t) for t in tars]
    return Listing(names=[n.encode("utf-8", "surrogateescape") for n in names],
                   kind=Kind.TAR_FILE, containers=names, container=np.arange(len(tars)),
                   start=np.zeros(len(tars), dtype=np.int64), size=sizes,
                   weight=weight.astype(np.int64),
                   stamps=[f"{st[0]}:{st[1]}" for st in stamps],
                   options={"image_key": options.get("image_key") or "",
                            "keep": list(options.get("keep_columns") or ()),
                            "sample_bytes": per})  # what the weights were estimated from


def sample_tar(unit: Unit, count: int) -> list[ItemRef]:
    """The first ``count`` samples of a tar, from the headers of its first ``SAMPLE_BYTES``
    (ranged reads of a remote one: it is not copied); ``ItemError`` if it cannot be read."""
    location = str(unit.ref.location)
    try:
        _, starts, sizes = list_tar(location, limit=SAMPLE_BYTES)
    except OSError as exc:
        raise storage.read_error(location, exc) from None
    return [ItemRef(Kind.TAR, location, a, b)
            for a, b in list(zip(starts, sizes, strict=True))[:count]]


def expand_tar(unit: Unit, spool: str) -> list[tuple[bytes, ItemRef]]:
    """The samples of a ``TAR_FILE`` unit (see the module doc)."""
    storage.check_stamp(str(unit.ref.location), unit.stamp, "tar")
    location = str(unit.ref.location)
    local = location
    if storage.is_url(location):
        local = os.path.join(spool, f"{unit.container}.tar")
        try:
            storage.download(location, local)
        except OSError as exc:
            raise storage.read_error(location, exc) from None
    try:
        keys, starts, sizes = list_tar(local)
    except OSError as exc:
        raise storage.read_error(location, exc) from None
    if not keys:
        raise ItemError("read", f"{storage.redact(location)} holds no webdataset sample "
                                "(not a tar, or empty)")
    return [(k.encode("utf-8", "surrogateescape"), ItemRef(Kind.TAR, local, a, b))
            for k, a, b in zip(keys, starts, sizes, strict=True)]


def _column(members: dict[str, bytes], name: str) -> Any:
    if name in members:
        text = members[name].decode("utf-8", "replace").strip()
        if name == "cls":
            try:
                return int(text)
            except ValueError:
                return text
        return text
    if "json" in members:
        try:
            value = json.loads(members["json"]).get(name)
        except (ValueError, AttributeError):
            return None
        return value if value is None or isinstance(value, str | int | float | bool) else (
            json.dumps(value))
    return None


def open_sample(buf: bytes | memoryview, expected: int, image_key: str,
                keep: Iterable[str]) -> Opened:
    """One sample's members from its bytes; ItemError if cut short or without an image."""

    members: dict[str, bytes] = {}
    for m in tarheaders.walk(lambda pos, n: bytes(buf[pos:pos + n]), end=len(buf)):
        split = tarheaders.split_key(m.name)
        if split is not None:
            members[split[1].lower()] = bytes(buf[m.data:m.data + m.size])
    if len(buf) < expected:
        raise ItemError("read", f"truncated tar: sample has {len(buf)} of {expected} bytes")
    if image_key:
        if image_key not in members:
            raise ItemError("read", f"sample has no .{image_key} member "
                                    f"(has {', '.join(sorted(members)) or 'none'})")
        data = members[image_key]
    else:
        found = [e for e in members if e.rsplit(".", 1)[-1] in IMAGE_EXTS]
        if not found:
            raise ItemError("read", "sample has no image member "
                                    f"(has {', '.join(sorted(members)) or 'none'})")
        data = members[found[0]]
    return Opened(data, {c: _column(members, c) for c in keep})


def open_tar_run(refs: Sequence[ItemRef], options: dict[str, Any]) -> list[Any]:
    """Samples of one tar, read with a single range read covering all of them."""
    lo = min(r.start for r in refs)
    hi = max(r.start + r.size for r in refs)
    location = str(refs[0].location)
    try:
        buf = memoryview(storage.read_range(location, lo, hi))
    except OSError as exc:
        return [storage.read_error(location, exc)] * len(refs)
    out: list[Any] = []
    for r in refs:
        try:
            out.append(open_sample(buf[r.start - lo:r.start - lo + r.size], r.size,
                                   options.get("image_key", ""), options.get("keep", ())))
        except ItemError as exc:
            out.append(exc)
    return out


KIND = SourceKind(
    Kind.TAR, "tar", suffix=".tar", reads=("image_key", "keep_columns"), modalities=("image",),
    list=lambda tars, options: InputList.from_listing(list_tars(tars, options)),
    opener=lambda options: lambda refs: open_tar_run(refs, options))
UNIT = UnitKind(Kind.TAR_FILE, "tar", expand_tar, sample=sample_tar)
