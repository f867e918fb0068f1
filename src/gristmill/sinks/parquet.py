"""Parquet output: one file per shard, ``parquet/shard-N.parquet``, all with the same schema.

Columns: ``name``, the carried columns, then one ``fixed_size_list<float32>`` column per output
(a multi-dimensional output is flattened per row; its row shape is in the schema metadata under
``gristmill``). The folder reads as one table with ``pyarrow.dataset.dataset("OUT/parquet")``,
``pandas.read_parquet("OUT/parquet")`` or DuckDB's ``SELECT * FROM 'OUT/parquet/*.parquet'``.
A shard with no readable input writes no file; the error rows of every shard are in its marker and,
after each run, in ``OUT/errors.parquet`` (the view).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..marker import IndexedError, Marker, standing_errors
from ..store import Store
from . import table as tb
from .base import (
    ErrorRow,
    Writer,
    check_columns,
    marker_error_rows,
    plain_errors,
)

FOLDER = "parquet"
ERRORS_FILE = "errors.parquet"


class ErrorsView:
    """What the Parquet and npy sinks share: error rows only in the markers, and the view,
    ``errors.parquet``, rebuilt from them (no data file is read)."""

    def error_rows(self, store: Store, marker: Marker) -> list[IndexedError]:
        return marker_error_rows(marker)

    def refresh_view(self, store: Store, markers: Sequence[Marker], outputs: Sequence[str],
                     attrs: dict[str, Any]) -> str:
        return refresh_errors(store, markers, attrs)

    def open_file(self, path: str) -> None:
        return None  # the view holds errors only: open the OUT folder


class ParquetSink(ErrorsView):
    format = "parquet"
    view = f"{FOLDER}/*.parquet ({ERRORS_FILE})"
    view_files = (ERRORS_FILE,)

    def folders(self, outputs: Sequence[str]) -> list[str]:
        return [FOLDER]

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[ErrorRow], columns: dict[str, list[Any]]) -> dict[str, Writer]:
        if not names:
            return {}
        check_columns(columns, outputs, len(names))
        table = tb.shard_table(names, outputs, columns)
        return {f"{FOLDER}/{shard_name}.parquet": lambda path: tb.write_parquet(path, table)}

    def open(self, store: Store, markers: Sequence[Marker],
             outputs: Sequence[str]) -> tb.TableResult:
        return read_tables(store, markers, outputs,
                           lambda store, marker, keys: _shard(store, marker))


def _shard(store: Store, marker: Marker) -> Any:
    rel = f"{FOLDER}/{marker.name}.parquet"
    return tb.read_parquet(store, rel) if rel in marker.files else None


def standing(markers: Sequence[Marker]) -> list[ErrorRow]:
    """The error rows still standing, from the markers alone: a retry shard's marker names the
    inputs it covered (``retried``), enough to retire their earlier rows."""
    return plain_errors(standing_errors([(m.retried, marker_error_rows(m)) for m in markers]))


def refresh_errors(store: Store, markers: Sequence[Marker], attrs: dict[str, Any]) -> str:
    """Write ``errors.parquet``: the error rows still standing, with the view's attributes."""
    store.put_bytes(ERRORS_FILE, tb.errors_bytes(standing(markers), attrs))
    return store.path(ERRORS_FILE)


def read_tables(store: Store, markers: Sequence[Marker], outputs: Sequence[str],
                load: Any) -> tb.TableResult:
    """Read the committed shards of a Parquet or npy OUT; ``load(store, marker, outputs)``
    returns the shard's table (``name``, carried columns, outputs) or None (no readable row)."""
    keys = list(outputs)
    names: list[list[str]] = []
    columns: list[dict[str, list[Any]]] = []
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    shapes: dict[str, list[int]] = {}
    for marker in markers:
        table = load(store, marker, keys)
        if table is not None:
            meta = json.loads((table.schema.metadata or {}).get(tb.META_KEY, b"{}"))
            shapes.update(meta.get("shapes", {}))
            columns.append({c: table.column(c).to_pylist() for c in table.column_names
                            if c != "name" and c not in keys})
            for key in keys:
                arrays[key].append(tb.column_array(table, key))
            names.append(table.column("name").to_pylist())
        shapes.update({k: list(v) for k, v in marker.shapes.items() if k not in shapes})
    return tb.merge(names, arrays, columns, standing(markers),
                    tb.view_attrs(store, ERRORS_FILE), shapes)
