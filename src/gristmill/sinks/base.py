"""The sink contract: how one shard becomes files in OUT, and how OUT is read back, per format.

``--format`` (``JobSpec.format``, part of the job identity) picks a sink:

- ``hdf5`` (default): ``shards/shard-N.h5`` and the ``features.h5`` view (``hdf5.py``);
- ``parquet``: ``parquet/shard-N.parquet``, one table over all shards (``parquet.py``);
- ``npy``: ``<output>/shard-N.npy`` + ``metadata/shard-N.parquet`` in the same row order, the
  layout embedding-reader and autofaiss read (``npy.py``).

(The registry is ``sinks/__init__.py``.)

Every sink shares the ledger's commit protocol: ``parts`` says which files a shard consists of and
how to write each to a local path; ``ledger.commit_parts`` publishes them whole and then the marker,
which lists them (``files``) and carries the shard's error rows. A shard with no marker does not
exist for ``open`` or for a resume.

Errors and retries: the shards of a job are read in id order; an input named again by a later
shard (a ``--retry-errors`` segment) supersedes its earlier error row, so every input appears
exactly once, in the outputs or in ``errors`` (``marker.standing_errors``).

What a format accepts (the names it cannot store, whether OUT may be object storage) is checked
before anything starts, from ``rules.py``, which imports no sink.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from ..marker import IndexedError, Marker
from ..store import Store
from .rules import TAKEN

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
    view: str  # what to read, in words, for the run's summary
    view_files: tuple[str, ...]  # OUT-relative files of the view, rebuilt after every run

    def folders(self, outputs: Sequence[str]) -> list[str]:
        """Folders of OUT that hold this format's shard files (swept for temporaries)."""
        ...

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[ErrorRow], columns: dict[str, list[Any]]) -> dict[str, Writer]:
        """The shard's files, ``OUT``-relative name -> function writing it to a local path."""
        ...

    def error_rows(self, store: Store, marker: Marker) -> list[IndexedError]:
        """A committed shard's error rows (from its marker; a format whose old markers lack
        them reads its files)."""
        ...

    def refresh_view(self, store: Store, markers: Sequence[Marker], outputs: Sequence[str],
                     attrs: dict[str, Any]) -> str:
        """(Re)build the view over the committed shards' ``markers``, in id order."""
        ...

    def open(self, store: Store, markers: Sequence[Marker], outputs: Sequence[str]) -> Result:
        """The committed shards (``markers``, in id order) as one ``Result``."""
        ...

    def open_file(self, path: str) -> Result | None:
        """``path`` opened as this format's view file; None when it is not one."""
        ...


def marker_error_rows(marker: Marker) -> list[IndexedError]:
    return list(marker.error_rows or ())


def plain_errors(rows: Iterable[IndexedError]) -> list[ErrorRow]:
    return [(name, stage, message) for _, name, stage, message in rows]


def check_columns(columns: dict[str, list[Any]], outputs: Iterable[str], rows: int) -> None:
    """Carried columns must be row-aligned and must not shadow ``name`` or an output."""
    taken = {*TAKEN, *outputs}
    for key, values in columns.items():
        if key in taken:
            raise ValueError(f"carried column {key!r} has the name of an output or of 'name'")
        if len(values) != rows:
            raise ValueError(f"carried column {key!r} has {len(values)} rows for {rows} names")
