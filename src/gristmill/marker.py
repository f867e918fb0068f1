"""A shard's marker: the one small file that makes a shard exist, written and read only here.

``shards/shard-N.json`` is published last by the commit protocol (``ledger.commit_parts``): a shard
whose marker is absent does not exist for any reader, a resume, ``status`` or the report. It says
which inputs the shard covered (``start``/``stop`` of the frozen list and their ``inputs`` digest),
for which job (``spec``, the identity hash), what it holds (``ok`` rows, ``errors`` error rows, the
``files`` its format's sink wrote, each output's row ``shape``), and the error rows themselves, each
with its input's index (or, for an item found in a tar or table unit, ``error_refs``: what opens
it again) so that ``--retry-errors`` can name the input again without reading a file or a tar.

Markers written by older versions lack some fields: no ``files`` (an HDF5 shard,
``shards/shard-N.h5``), no ``error_rows`` (the rows are in the HDF5 file only: ``error_rows`` is
None and the sink reads them), no ``shard``/``start``/``stop`` (taken from the file name and the
plan). Reading never fails on them; an unreadable marker is no marker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .sinks import DEFAULT_FORMAT
from .store import Store

SHARDS_DIR = "shards"
PREFIX = "shard-"
# markers older than ``files`` were written when the only format was HDF5, one file per shard
LEGACY_FILE = SHARDS_DIR + "/{name}.h5"

# (input index, name, stage, message); the index is -1 where an old HDF5 file gave the row
IndexedError = tuple[int, str, str, str]


def shard_name(shard_id: int) -> str:
    return f"{PREFIX}{shard_id:06d}"


def marker_name(shard_id: int) -> str:
    """The marker's OUT-relative name."""
    return f"{SHARDS_DIR}/{shard_name(shard_id)}.json"


def shard_id(file_name: str) -> int | None:
    """``shard-000012.json`` -> 12; None for any other name."""
    if not (file_name.startswith(PREFIX) and file_name.endswith(".json")):
        return None
    digits = file_name[len(PREFIX):-5]
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class Marker:
    """What a committed shard is (see the module docstring)."""

    shard: int
    start: int
    stop: int
    ok: int
    errors: int
    inputs: str  # digest of the names of inputs [start, stop)
    spec: str  # the job's identity hash
    format: str = DEFAULT_FORMAT
    files: tuple[str, ...] = ()
    error_rows: tuple[IndexedError, ...] | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    retried: tuple[str, ...] = ()  # a retry shard: the names it covered (their old rows retire)
    # per error row, for an item found in a unit (a tar's sample, a table's row): (kind,
    # container, start, size), what opens it again without expanding the unit; None elsewhere
    error_refs: tuple[tuple[int, int, int, int] | None, ...] | None = None
    rows: tuple[int, ...] = ()  # a shard of units: its ok rows per entry [start, stop), in order

    @property
    def name(self) -> str:
        return shard_name(self.shard)

    @property
    def items(self) -> int:
        return self.ok + self.errors

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "shard": self.shard, "start": self.start, "stop": self.stop, "ok": self.ok,
            "errors": self.errors, "inputs": self.inputs, "spec": self.spec,
            "format": self.format, "files": list(self.files),
            "outputs": {k: list(v) for k, v in self.shapes.items()}}
        if self.error_rows is not None:
            data["error_rows"] = [list(r) for r in self.error_rows]
        if self.retried:
            data["retried"] = list(self.retried)
        if self.rows:
            data["rows"] = list(self.rows)
        if self.error_refs is not None:
            data["error_refs"] = [None if r is None else list(r) for r in self.error_refs]
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, shard: int) -> Marker | None:
        """The marker of shard ``shard`` (the id its file name gives); None if unreadable."""
        try:
            raw = json.loads(data)
            rows = raw.get("error_rows")
            return cls(
                shard=int(raw.get("shard", shard)), start=int(raw.get("start", -1)),
                stop=int(raw.get("stop", -1)), ok=int(raw.get("ok", 0)),
                errors=int(raw.get("errors", 0)), inputs=str(raw.get("inputs", "")),
                spec=str(raw.get("spec", "")), format=str(raw.get("format", DEFAULT_FORMAT)),
                files=tuple(raw["files"] if "files" in raw else
                            (LEGACY_FILE.format(name=shard_name(shard)),)),
                error_rows=None if rows is None and raw.get("errors") else tuple(
                    (int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows or ()),
                shapes={k: tuple(v) for k, v in (raw.get("outputs") or {}).items()},
                retried=tuple(raw.get("retried", ())),
                error_refs=None if raw.get("error_refs") is None else tuple(
                    None if r is None else (int(r[0]), int(r[1]), int(r[2]), int(r[3]))
                    for r in raw["error_refs"]),
                rows=tuple(int(n) for n in raw.get("rows", ())))
        except (ValueError, TypeError, AttributeError, IndexError):
            return None


def write(store: Store, marker: Marker) -> None:
    """Publish ``marker`` (one PUT, or a temporary file renamed): the shard exists from now on."""
    store.put_bytes(marker_name(marker.shard), marker.to_bytes())


def exists(store: Store, shard: int) -> bool:
    return store.exists(marker_name(shard))


def read(store: Store, shard: int) -> Marker | None:
    """Shard ``shard``'s marker; None when it is absent or unreadable (not committed)."""
    try:
        return Marker.from_bytes(store.read(marker_name(shard)), shard)
    except OSError:
        return None


def listed(store: Store) -> list[int]:
    """The ids of the shards whose marker is present, in id order: one listing of ``shards/``."""
    return sorted(sid for sid in map(shard_id, store.listdir(SHARDS_DIR)) if sid is not None)


def read_all(store: Store, wanted: Iterable[int] | None = None) -> list[Marker]:
    """Every readable marker in OUT (or those of ``wanted`` present), in shard id order.

    One listing, then one read per marker, concurrently on object storage (each read is a GET
    whose latency, not its size, is the cost).
    """
    ids = listed(store)
    if wanted is not None:
        keep = set(wanted)
        ids = [i for i in ids if i in keep]
    if store.remote and len(ids) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(32, len(ids))) as pool:
            found = list(pool.map(lambda i: read(store, i), ids))
    else:
        found = [read(store, i) for i in ids]
    return [m for m in found if m is not None]


def in_order(markers: Iterable[Marker]) -> list[Marker]:
    """Markers in shard id order: the order every reader combines shards in."""
    return sorted(markers, key=lambda m: m.shard)


def standing_errors(shards: Sequence[tuple[Iterable[str], Iterable[IndexedError]]]
                    ) -> list[IndexedError]:
    """The error rows still standing after every shard, given each shard's (ok names, error
    rows) in id order: a later shard naming an input again (a ``--retry-errors`` shard)
    replaces its earlier row, so every input appears once, in the outputs or in the errors."""
    standing: dict[str, IndexedError] = {}
    for ok, errors in shards:
        for name in ok:
            standing.pop(name, None)
        for row in errors:
            standing.pop(row[1], None)  # re-inserted: a retried error moves to its new place
            standing[row[1]] = row
    return list(standing.values())
