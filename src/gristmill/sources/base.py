"""The source contract: items with stable unique names, and references a loader can open.

A source (``files``: folders, list files, globs; ``tars``: webdataset shards; ``tables``: Parquet;
``lines``: the captions of text files) is listed once, in the driver, into an ``InputList``: the
items' names in a fixed order plus, per item, which kind of source it came from and where its bytes
are (a tar's path + the sample's byte range, a table's path + row group + row). The list is frozen
in ``OUT/inputs.npz``, so a resume never lists again. Loader processes turn a batch's ``ItemRef``s
into bytes (``reader.BatchReader``).

Storage is compact for a million items: names are one byte buffer plus offsets, the references are
numpy columns, containers (tars, tables) are listed once each; nothing is a per-item Python
object.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np


class Kind(IntEnum):
    FILE = 0  # a loose file: root + name
    TAR = 1  # a webdataset sample: bytes [start, start + size) of a tar hold its members
    TABLE = 2  # a Parquet row: row group ``start``, row ``size`` within it
    LINE = 3  # a text file's line: bytes [start, start + size) of the file (``lines``)


class ItemRef(NamedTuple):
    """What a loader needs to open one item (small; one per item of a batch only)."""

    kind: int
    location: bytes | str  # a file's path or URL; a tar's or table's path or URL
    start: int = 0
    size: int = 0


@dataclass(frozen=True)
class Opened:
    """An item's bytes (an encoded image, or a caption's UTF-8 text) and its carried metadata
    columns."""

    data: bytes
    columns: dict[str, Any] = field(default_factory=dict)


Opener = Callable[[Sequence[ItemRef]], list[Any]]  # one Opened or ItemError per ref, in order


@dataclass(frozen=True)
class SourceKind:
    """One kind of source: how it is recognised, listed (driver) and opened (loaders).

    Container kinds (tars, tables) are recognised by their files' ``suffix`` and list the
    containers a source names; loose kinds (``suffix`` empty: image files, text files) list the
    sources themselves. ``reads`` are the source options only this kind understands (another
    kind's job refuses them); ``modalities`` what its items can be. ``opener(options)`` makes a
    loader's reader of refs of this kind (with whatever cache it keeps between batches).
    The registry is ``sources/kinds.py``.
    """

    kind: Kind
    label: str  # in messages: "tar", "Parquet", ...
    suffix: str
    reads: tuple[str, ...]
    modalities: tuple[str, ...]
    list: Callable[[list[str], dict[str, Any]], InputList]
    opener: Callable[[dict[str, Any]], Opener]


@dataclass
class Listing:
    """Items of one source before freezing: names in order + per-item references."""

    names: list[bytes]
    kind: Kind
    containers: list[str] = field(default_factory=list)
    container: list[int] | np.ndarray = field(default_factory=list)
    start: list[int] | np.ndarray = field(default_factory=list)
    size: list[int] | np.ndarray = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def display_name(raw: bytes) -> str:
    """A name as text; bytes that are not UTF-8 become backslash escapes."""
    return raw.decode("utf-8", errors="backslashreplace")


def _offsets(names: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The names as one byte buffer and their offsets into it."""
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    step = 1 << 16  # bytes.join keeps an 80-byte buffer record per item: join in chunks
    for at in range(0, len(names), step):
        part = b"".join(names[at:at + step])
        blob[offsets[at]:offsets[at] + len(part)] = np.frombuffer(part, dtype=np.uint8)
    return blob, offsets


@dataclass(frozen=True)
class InputList:
    """Input names (files: relative to ``root``) with their references, stored compactly.

    ``kind`` is None for a list of loose files only (the layout older jobs froze); otherwise every
    item has a kind, a container index into ``containers`` (-1 for loose files), and two integers
    whose meaning depends on the kind (see ``Kind``). ``options`` (JSON) tells loaders how to read
    the containers (image key or column, path column).
    """

    root: bytes
    blob: np.ndarray
    offsets: np.ndarray
    kind: np.ndarray | None = None
    container: np.ndarray | None = None
    start: np.ndarray | None = None
    size: np.ndarray | None = None
    containers: tuple[str, ...] = ()
    options: str = "{}"

    @classmethod
    def from_names(cls, root: bytes, names: Iterable[bytes]) -> InputList:
        blob, offsets = _offsets(sorted(set(names)))
        return cls(root=root, blob=blob, offsets=offsets)

    @classmethod
    def from_sorted(cls, root: bytes, names: list[bytes]) -> InputList:
        """Names already sorted and unique. Empties ``names``: its objects are most of the
        memory of a ten-million-name list."""
        blob, offsets = _offsets(names)
        names.clear()
        return cls(root=root, blob=blob, offsets=offsets)

    @classmethod
    def from_listing(cls, listing: Listing) -> InputList:
        """Items in the listing's order (containers keep their members' order)."""
        blob, offsets = _offsets(listing.names)
        n = len(listing.names)
        return cls(root=b"", blob=blob, offsets=offsets,
                   kind=np.full(n, int(listing.kind), dtype=np.uint8),
                   container=np.asarray(listing.container, dtype=np.int32),
                   start=np.asarray(listing.start, dtype=np.int64),
                   size=np.asarray(listing.size, dtype=np.int64),
                   containers=tuple(listing.containers),
                   options=json.dumps(listing.options, sort_keys=True))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def raw_range(self, start: int, stop: int) -> list[bytes]:
        data = self.blob[self.offsets[start]:self.offsets[stop]].tobytes()
        base = self.offsets[start]
        return [data[a - base:b - base] for a, b in
                zip(self.offsets[start:stop].tolist(), self.offsets[start + 1:stop + 1].tolist(),
                    strict=True)]

    def path(self, i: int) -> bytes:
        return os.path.join(self.root, self.raw(i))

    @property
    def reader_options(self) -> dict[str, Any]:
        return json.loads(self.options)

    def refs(self, start: int, stop: int) -> tuple[ItemRef, ...]:
        """The references of items [start, stop), for a loader."""
        if self.kind is None:
            return tuple(ItemRef(Kind.FILE, os.path.join(self.root, n))
                         for n in self.raw_range(start, stop))
        return tuple(ItemRef(int(k), self.containers[c], int(a), int(b)) for k, c, a, b in zip(
            self.kind[start:stop].tolist(), self.container[start:stop].tolist(),
            self.start[start:stop].tolist(), self.size[start:stop].tolist(), strict=True))

    def breaks(self) -> list[int]:
        """Indices where a new container begins (0 excluded): shard planning keeps to them."""
        if self.container is None or not len(self.container):
            return []
        return (np.flatnonzero(np.diff(self.container)) + 1).tolist()

    def digest(self, start: int, stop: int) -> str:
        """A hash of the names in [start, stop): the identity of one shard's inputs."""
        h = hashlib.sha1(self.blob[self.offsets[start]:self.offsets[stop]].tobytes())
        h.update((self.offsets[start:stop + 1] - self.offsets[start]).tobytes())
        return h.hexdigest()

    def save(self, path: str) -> None:
        arrays: dict[str, Any] = {"root": np.frombuffer(self.root, dtype=np.uint8),
                                  "blob": self.blob, "offsets": self.offsets}
        if self.kind is not None:
            cblob, coffsets = _offsets([c.encode() for c in self.containers])
            arrays |= {"kind": self.kind, "container": self.container, "start": self.start,
                       "size": self.size, "containers_blob": cblob,
                       "containers_offsets": coffsets,
                       "options": np.frombuffer(self.options.encode(), dtype=np.uint8)}
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> InputList:
        with np.load(path) as data:
            base = cls(root=data["root"].tobytes(), blob=data["blob"], offsets=data["offsets"])
            if "kind" not in data:
                return base
            cblob, coffsets = data["containers_blob"].tobytes(), data["containers_offsets"]
            containers = tuple(cblob[a:b].decode() for a, b in
                               zip(coffsets[:-1].tolist(), coffsets[1:].tolist(), strict=True))
            return cls(root=base.root, blob=base.blob, offsets=base.offsets, kind=data["kind"],
                       container=data["container"], start=data["start"], size=data["size"],
                       containers=containers, options=data["options"].tobytes().decode())
