"""The sink contract: how one shard becomes files in OUT, and how OUT is read back, per format.

``--format`` (``JobSpec.format``, part of the job identity) picks a sink:

- ``hdf5`` (default): ``shards/shard-N.h5`` and the ``features.h5`` view (``hdf5.py``);
- ``parquet``: ``parquet/shard-N.parquet``, one table over all shards (``parquet.py``);
- ``npy``: ``<output>/shard-N.npy`` + ``metadata/shard-N.parquet`` in the same row order, the
  layout embedding-reader and autofaiss read (``npy.py``).

Every sink shares the ledger's commit protocol: ``parts`` says which files a shard consists of and
how to write each to a local path; ``ledger.commit_parts`` publishes them whole and then the marker,
which lists them (``files``) and carries the shard's error rows. A shard with no marker does not
exist for ``open`` or for a resume.

Errors and retries: the shards of a job are read in id order; an input named again by a later
shard (a ``--retry-errors`` segment) supersedes its earlier error row, so every input appears
exactly once, in the outputs or in ``errors`` (``current_errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from .. import ledger
from ..store import Store

FORMATS = ("hdf5", "parquet", "npy")
Writer = Callable[[str], None]
ErrorRow = tuple[str, str, str]  # name, stage, message


class Result(Protocol):
    """What ``gristmill.open(OUT)`` returns for every format (a context manager)."""

    @property
    def names(self) -> list[str]: ...
    @property
    def outputs(self) -> dict[str, Any]: ...
    @property
    def errors(self) -> list[ErrorRow]: ...
    @property
    def columns(self) -> dict[str, Sequence[Any]]: ...
    @property
    def complete(self) -> bool: ...
    def __getitem__(self, key: str) -> Any: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...


class Sink(Protocol):
    format: str

    def folders(self, outputs: Sequence[str]) -> list[str]:
        """Folders of OUT that hold this format's shard files (swept for temporaries)."""
        ...

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[ErrorRow], columns: dict[str, list[Any]]) -> dict[str, Writer]:
        """The shard's files, ``OUT``-relative name -> function writing it to a local path."""
        ...

    def refresh_view(self, store: Store, shards: Sequence[tuple[str, dict[str, Any]]],
                     outputs: Sequence[str], attrs: dict[str, Any]) -> str:
        """(Re)build the view over the committed ``(shard name, marker)`` pairs, in id order."""
        ...

    def open(self, out: str) -> Result:
        ...


def get_sink(fmt: str) -> Sink:
    if fmt == "parquet":
        from .parquet import ParquetSink

        return ParquetSink()
    if fmt == "npy":
        from .npy import NpySink

        return NpySink()
    from .hdf5 import Hdf5Sink

    return Hdf5Sink()


def shard_files(marker: dict[str, Any], shard_name: str) -> list[str]:
    """What a committed shard consists of: the files its marker lists."""
    return ledger.shard_files(marker, shard_name)


def error_rows(marker: dict[str, Any]) -> list[ErrorRow]:
    return [(str(r[1]), str(r[2]), str(r[3])) for r in marker.get("error_rows", [])]


def current_errors(shards: Iterable[tuple[Iterable[str], Iterable[ErrorRow]]]) -> list[ErrorRow]:
    """The error rows still standing after every shard, given each shard's (ok names, errors)
    in id order: a later shard naming an input again replaces its earlier row."""
    standing: dict[str, ErrorRow] = {}
    for ok, errors in shards:
        for name in ok:
            standing.pop(name, None)
        for row in errors:
            standing.pop(row[0], None)  # re-inserted: a retried error moves to its new place
            standing[row[0]] = row
    return list(standing.values())


def committed_markers(out: str | Store) -> list[tuple[str, dict[str, Any]]]:
    """Every ``(shard name, marker)`` in OUT, in shard id order (what ``open`` reads)."""
    import json

    store = out if isinstance(out, Store) else Store(out)
    found = []
    names = [n for n in store.listdir(ledger.SHARDS_DIR)
             if n.startswith("shard-") and n.endswith(".json") and n[6:-5].isdigit()]
    for name in sorted(names, key=lambda n: int(n[6:-5])):
        try:
            found.append((name[:-5], json.loads(store.read(f"{ledger.SHARDS_DIR}/{name}"))))
        except (OSError, ValueError):
            continue  # unreadable marker: the shard is not committed
    return found


def check_columns(columns: dict[str, list[Any]], outputs: Iterable[str], rows: int) -> None:
    """Carried columns must be row-aligned and must not shadow ``name`` or an output."""
    taken = {"name", *outputs}
    for key, values in columns.items():
        if key in taken:
            raise ValueError(f"carried column {key!r} has the name of an output or of 'name'")
        if len(values) != rows:
            raise ValueError(f"carried column {key!r} has {len(values)} rows for {rows} names")
