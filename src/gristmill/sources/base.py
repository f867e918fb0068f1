"""The source contract: inputs with stable unique names, and references a loader can open.

A source (``files``: folders, list files, globs; ``tars``: webdataset shards; ``tables``: Parquet;
``lines``: the captions of text files) is listed once, in the driver, into an ``InputList`` of
*entries*, frozen in ``OUT/inputs.npz`` so that a resume never lists again. An entry is either

- an item: a loose file (root + name), a text file's line, or one sample of a tar or row of a
  table with its byte range or row (``--retry-errors`` names such items again); or
- a *unit*: a whole tar (``TAR_FILE``) or a run of a table's row groups (``TABLE_PART``), named
  after its container. The driver lists containers only, with their sizes and versions
  (``stamps``): planning reads no tar byte and no table row, and the driver's memory grows with
  containers, never with the items inside them. A worker *expands* a unit into its items when
  its shard runs (``UnitKind.expand``: a tar's header walk, a table's key column).

Each entry has a ``weight``, the items it holds (1 for an item; a table part's row count; a tar's
estimate from its size), which the plan packs into shards. Loader processes turn a batch's
``ItemRef``s into bytes (``reader.BatchReader``).

Storage is compact: names are one byte buffer plus offsets, the references are numpy columns,
containers are listed once each; nothing is a per-entry Python object.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np


class Kind(IntEnum):
    FILE = 0  # a loose file: root + name
    TAR = 1  # a webdataset sample: bytes [start, start + size) of a tar hold its members
    TABLE = 2  # a Parquet row: row group ``start``, row ``size`` within it
    LINE = 3  # a text file's line: bytes [start, start + size) of the file (``lines``)
    TAR_FILE = 4  # a unit: a whole tar (start 0, size its bytes), expanded into TAR samples
    TABLE_PART = 5  # a unit: a table's row groups [start, start + size), expanded into TABLE rows


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


@dataclass(frozen=True)
class Unit:
    """One unit entry of a frozen list, for its worker: where it is and what it was when listed
    (``stamp``: ``"size:version"``; a container that no longer matches is ``SourceChanged``)."""

    ref: ItemRef
    container: int  # index into the list's containers
    stamp: str
    options: dict[str, Any]


Expand = Callable[[Unit, str], list[tuple[bytes, ItemRef]]]


@dataclass(frozen=True)
class UnitKind:
    """How a worker expands one kind of unit into its items: ``expand(unit, spool)`` returns
    (name, item ref) pairs in the container's order; ``spool`` is a local folder it may copy a
    remote container into (read once, then opened locally by the loaders). It raises
    ``SourceChanged`` if the container changed since it was listed, and ``ItemError`` if it
    cannot be read at all (the unit is then one error row, named after the container)."""

    kind: Kind
    label: str  # "tar", "Parquet row groups": in messages and in status
    expand: Expand
    # a few of its items for a calibration, reading less than ``expand`` (None: ``expand``)
    sample: Callable[[Unit, int], list[ItemRef]] | None = None


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
    kinds: list[int] | np.ndarray | None = None  # per entry, where not all are ``kind``
    weight: list[int] | np.ndarray | None = None  # per entry: the items it holds (units)
    stamps: list[str] = field(default_factory=list)  # per container, for units


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


UNIT_KINDS = (Kind.TAR_FILE, Kind.TABLE_PART)


@dataclass(frozen=True)
class InputList:
    """Input entries (files: names relative to ``root``) with their references, stored compactly.

    ``kind`` is None for a list of loose files only (the layout older jobs froze); otherwise every
    entry has a kind, a container index into ``containers`` (-1 for loose files), and two integers
    whose meaning depends on the kind (see ``Kind``). ``weight`` (None: 1 each) is the items an
    entry holds; ``stamps`` the containers' ``"size:version"`` when listed (units only).
    ``options`` (JSON) tells loaders and workers how to read the containers (image key or
    column, path column, the folder table row names are relative to).
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
    weight: np.ndarray | None = None
    stamps: tuple[str, ...] = ()

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
        """Entries in the listing's order (containers keep their members' order)."""
        blob, offsets = _offsets(listing.names)
        n = len(listing.names)
        kinds = (np.full(n, int(listing.kind), dtype=np.uint8) if listing.kinds is None
                 else np.asarray(listing.kinds, dtype=np.uint8))
        return cls(root=b"", blob=blob, offsets=offsets, kind=kinds,
                   container=np.asarray(listing.container, dtype=np.int32),
                   start=np.asarray(listing.start, dtype=np.int64),
                   size=np.asarray(listing.size, dtype=np.int64),
                   containers=tuple(listing.containers),
                   options=json.dumps(listing.options, sort_keys=True),
                   weight=(None if listing.weight is None
                           else np.asarray(listing.weight, dtype=np.int64)),
                   stamps=tuple(listing.stamps))

    # -- units and weights -----------------------------------------------------------------------
    def weights(self) -> np.ndarray:
        """Items per entry (an estimate for a tar unit, see ``Kind``)."""
        return (np.ones(len(self), dtype=np.int64) if self.weight is None else self.weight)

    def unit_mask(self) -> np.ndarray:
        """Which entries are units (expanded by their worker)."""
        if self.kind is None:
            return np.zeros(len(self), dtype=bool)
        return np.isin(self.kind, np.asarray(UNIT_KINDS, dtype=np.uint8))

    @cached_property
    def has_units(self) -> bool:
        return self.kind is not None and bool(self.unit_mask().any())

    def unit(self, i: int) -> Unit | None:
        """Entry ``i`` as a unit, or None for an item."""
        if self.kind is None or int(self.kind[i]) not in UNIT_KINDS:
            return None
        c = int(self.container[i])
        return Unit(ItemRef(int(self.kind[i]), self.containers[c], int(self.start[i]),
                            int(self.size[i])), c, self.stamps[c] if c < len(self.stamps) else "",
                    self.reader_options)

    def unit_bytes(self) -> np.ndarray:
        """Bytes per entry where known (a tar unit's size), else 0: what the ETA counts."""
        if self.kind is None:
            return np.zeros(len(self), dtype=np.int64)
        return np.where(self.kind == int(Kind.TAR_FILE), self.size, 0)

    # -- growing ----------------------------------------------------------------------------------
    def take(self, indices: Sequence[int]) -> InputList:
        """Entries ``indices`` of this list (their containers kept as they are)."""
        picked = np.asarray(indices, dtype=np.int64)
        names = [self.raw(i) for i in picked.tolist()]
        blob, offsets = _offsets(names)
        if self.kind is None:
            return InputList(root=self.root, blob=blob, offsets=offsets)
        return replace(self, blob=blob, offsets=offsets, kind=self.kind[picked],
                       container=self.container[picked], start=self.start[picked],
                       size=self.size[picked],
                       weight=None if self.weight is None else self.weight[picked])

    def concat(self, other: InputList) -> InputList:
        """This list followed by ``other``'s entries; ``other``'s containers are mapped onto
        this list's by name (new ones appended with their stamps); indices here are unchanged."""
        offsets = np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]
                                  - other.offsets[0]]).astype(np.int64)
        blob = np.concatenate([self.blob, other.blob[other.offsets[0]:other.offsets[-1]]])
        if self.kind is None and other.kind is None:  # loose files: names are the references
            return InputList(root=self.root, blob=blob, offsets=offsets)
        if self.kind is None or other.kind is None:
            raise ValueError("another kind of input")
        containers = list(self.containers)
        stamps = [*self.stamps, *[""] * (len(containers) - len(self.stamps))]
        position = {c: i for i, c in enumerate(containers)}
        mapping = np.full(len(other.containers) + 1, -1, dtype=np.int32)
        for i, name in enumerate(other.containers):
            if name not in position:
                position[name] = len(containers)
                containers.append(name)
                stamps.append(other.stamps[i] if i < len(other.stamps) else "")
            mapping[i] = position[name]
        mapped = mapping[other.container]  # -1 (loose) indexes the last, -1
        weight = (None if self.weight is None and other.weight is None else
                  np.concatenate([self.weights(), other.weights()]))
        return replace(self, blob=blob, offsets=offsets,
                       kind=np.concatenate([self.kind, other.kind]),
                       container=np.concatenate([self.container, mapped]).astype(np.int32),
                       start=np.concatenate([self.start, other.start]),
                       size=np.concatenate([self.size, other.size]),
                       containers=tuple(containers), stamps=tuple(stamps), weight=weight)

    @classmethod
    def from_entries(cls, like: InputList, entries: Sequence[tuple[bytes, int, int, int, int]]
                     ) -> InputList:
        """A list of ``(name, kind, container, start, size)`` items (weight 1) over ``like``'s
        containers: the error rows ``--retry-errors`` names again."""
        blob, offsets = _offsets([e[0] for e in entries])
        columns = np.asarray([e[1:] for e in entries], dtype=np.int64).reshape(-1, 4)
        return replace(like, blob=blob, offsets=offsets, kind=columns[:, 0].astype(np.uint8),
                       container=columns[:, 1].astype(np.int32), start=columns[:, 2],
                       size=columns[:, 3], weight=np.ones(len(entries), dtype=np.int64))

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
            if self.weight is not None:
                sblob, soffsets = _offsets([s.encode() for s in self.stamps])
                arrays |= {"weight": self.weight, "stamps_blob": sblob,
                           "stamps_offsets": soffsets}
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
            containers = _strings(cblob, coffsets)
            weight, stamps = None, ()
            if "weight" in data:
                weight = data["weight"]
                stamps = _strings(data["stamps_blob"].tobytes(), data["stamps_offsets"])
            return cls(root=base.root, blob=base.blob, offsets=base.offsets, kind=data["kind"],
                       container=data["container"], start=data["start"], size=data["size"],
                       containers=containers, options=data["options"].tobytes().decode(),
                       weight=weight, stamps=stamps)


def _strings(blob: bytes, offsets: np.ndarray) -> tuple[str, ...]:
    return tuple(blob[a:b].decode() for a, b in
                 zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
