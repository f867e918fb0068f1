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

from ..store import Store
from . import table as tb
from .base import (
    ErrorRow,
    Writer,
    check_columns,
    committed_markers,
    current_errors,
    error_rows,
    shard_files,
)

FOLDER = "parquet"


class ParquetSink:
    format = "parquet"

    def folders(self, outputs: Sequence[str]) -> list[str]:
        return [FOLDER]

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[ErrorRow], columns: dict[str, list[Any]]) -> dict[str, Writer]:
        if not names:
            return {}
        check_columns(columns, outputs, len(names))
        table = tb.shard_table(names, outputs, columns)
        return {f"{FOLDER}/{shard_name}.parquet": lambda path: tb.write_parquet(path, table)}

    def refresh_view(self, store: Store, shards: Sequence[tuple[str, dict[str, Any]]],
                     outputs: Sequence[str], attrs: dict[str, Any]) -> str:
        return refresh_errors(store, shards, attrs)

    def open(self, out: str) -> tb.TableResult:
        return read_tables(out, lambda store, name, files, keys: _shard(store, name, files))


def _shard(store: Store, name: str, files: list[str]) -> Any:
    rel = f"{FOLDER}/{name}.parquet"
    return tb.read_parquet(store, rel) if rel in files else None


def refresh_errors(store: Store, shards: Sequence[tuple[str, dict[str, Any]]],
                   attrs: dict[str, Any]) -> str:
    """Write ``errors.parquet``: the error rows still standing, with the view's attributes.

    Needs only the markers: an input's later appearance (a retried error) is found by name."""
    errors = current_errors((_ok_names(marker), error_rows(marker)) for _, marker in shards)
    store.put_bytes("errors.parquet", tb.errors_bytes(errors, attrs))
    return store.path("errors.parquet")


def _ok_names(marker: dict[str, Any]) -> list[str]:
    # a retry shard's marker names the inputs it covered (``retried``): enough to retire rows
    return list(marker.get("retried", []))


def read_tables(out: str, load: Any) -> tb.TableResult:
    """Read every committed shard of a Parquet or npy OUT; ``load(store, shard name, files,
    outputs)`` returns the shard's table (``name``, carried columns, outputs) or None."""
    from .. import ledger

    store = Store(out)
    job = ledger.read_job(out) or {}
    keys = list((job.get("spec") or {}).get("outputs", []))
    names: list[list[str]] = []
    columns: list[dict[str, list[Any]]] = []
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    per_shard = []
    shapes: dict[str, list[int]] = {}
    for shard_name, marker in committed_markers(store):
        table = load(store, shard_name, shard_files(marker, shard_name), keys)
        shard_names: list[str] = []
        if table is not None:
            meta = json.loads((table.schema.metadata or {}).get(tb.META_KEY, b"{}"))
            shapes.update(meta.get("shapes", {}))
            shard_names = table.column("name").to_pylist()
            columns.append({c: table.column(c).to_pylist() for c in table.column_names
                            if c != "name" and c not in keys})
            for key in keys:
                outputs[key].append(tb.column_array(table, key))
            names.append(shard_names)
        per_shard.append((shard_names, error_rows(marker)))
        shapes.update({k: v for k, v in marker.get("outputs", {}).items() if k not in shapes})
    return tb.merge(names, outputs, columns, current_errors(per_shard), tb.view_attrs(store),
                    shapes)
