"""A tar header walk that never reads member data: the part of a tar gristmill needs.

Used by the driver to list samples (headers only: one 512-byte read per member, plus pax and GNU
long-name records, with seeks over the data) and by loaders to split a sample's byte range, already
in memory, into its members. Handles ustar, pax (``x``: ``path``/``size`` records; webdataset's
writer emits one per member) and GNU long names (``L``). A header that is not a valid tar header
(bad checksum, cut short) ends the walk: everything before it is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

BLOCK = 512


class Member(NamedTuple):
    name: str
    header: int  # offset of the first header block belonging to this member (pax/long name)
    data: int  # offset of its data
    size: int


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _valid(block: bytes) -> bool:
    try:
        stored = _octal(block[148:156])
    except ValueError:
        return False
    return stored == sum(block[:148]) + 256 + sum(block[156:])


def _pax(records: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(records[pos:space])
        except ValueError:
            break
        key, _, value = records[space + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def walk(read_at: Callable[[int, int], bytes], end: int | None = None) -> Iterator[Member]:
    """Regular-file members of a tar whose bytes ``read_at(offset, n)`` returns, in order.

    ``end`` stops the walk at that offset (a sample's range); a member whose data runs past the
    available bytes is still yielded (the reader then finds it truncated).
    """
    pos = 0
    first = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while end is None or pos < end:
        block = read_at(pos, BLOCK)
        if len(block) < BLOCK or block.count(0) == BLOCK or not _valid(block):
            return
        kind = block[156:157]
        size = _octal(block[124:136])
        data = pos + BLOCK
        following = data + (size + BLOCK - 1) // BLOCK * BLOCK
        if kind in (b"x", b"L"):
            payload = read_at(data, size)
            if kind == b"x":
                pax = _pax(payload)
            else:
                long_name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
            pos = following
            continue
        if kind in (b"0", b"\0", b"7"):
            name = block[:100].split(b"\0", 1)[0]
            if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
                name = block[345:500].split(b"\0", 1)[0] + b"/" + name
            text = pax.get("path") or long_name or name.decode("utf-8", "surrogateescape")
            if "size" in pax:
                size = int(pax["size"])
                following = data + (size + BLOCK - 1) // BLOCK * BLOCK
            yield Member(text, first, data, size)
        pax, long_name = {}, None
        pos = first = following


def split_key(name: str) -> tuple[str, str] | None:
    """webdataset's rule: (key, extension) split at the first dot of the basename; None if none."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext
