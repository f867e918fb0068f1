"""Arrow helpers shared by the Parquet and npy sinks: shard tables, the errors view, and the result
that ``gristmill.open`` returns for both (everything read into numpy, in shard id order)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store import Store
from .base import ErrorRow

META_KEY = b"gristmill"  # schema metadata: {"shapes": {output: [dims]}} and the view's attrs


def _carried(values: list[Any]) -> Any:
    import pyarrow as pa

    array = pa.array(values)
    # a shard where a column is all None would get type null and clash with the other shards
    return array.cast(pa.string()) if pa.types.is_null(array.type) else array


def shard_table(names: Sequence[str], outputs: dict[str, np.ndarray],
                columns: dict[str, list[Any]]) -> Any:
    """``name``, the carried columns, then one ``fixed_size_list<float32>`` column per output
    (rows flattened; each output's row shape is kept in the schema metadata)."""
    import pyarrow as pa

    arrays = {"name": pa.array(list(names), pa.string())}
    arrays.update({key: _carried(list(values)) for key, values in columns.items()})
    shapes = {}
    for key, value in outputs.items():
        flat = np.ascontiguousarray(value, dtype=np.float32).reshape(len(value), -1)
        arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        shapes[key] = list(value.shape[1:])
    table = pa.table(arrays)
    return table.replace_schema_metadata({META_KEY: json.dumps({"shapes": shapes})})


def write_parquet(path: str, table: Any) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def read_parquet(store: Store, rel: str) -> Any:
    import pyarrow.parquet as pq

    if store.remote:  # one GET of a small file
        return pq.read_table(io.BytesIO(store.read(rel)))
    return pq.read_table(store.path(rel))


def column_array(table: Any, key: str) -> np.ndarray:
    """An output column as float32 ``(rows, *shape)``."""
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    shape = meta.get("shapes", {}).get(key)
    column = table.column(key).combine_chunks()
    width = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), *(shape if shape is not None else (width,)))


def errors_bytes(errors: Sequence[ErrorRow], attrs: dict[str, Any]) -> bytes:
    """``errors.parquet``: the standing error rows (``name``, ``stage``, ``message``); the view's
    attributes (``complete``, shard counts, model) in its schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array([r[i] for r in errors], pa.string())
                      for i, k in enumerate(("name", "stage", "message"))})
    table = table.replace_schema_metadata({META_KEY: json.dumps({"attrs": attrs})})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def view_attrs(store: Store, rel: str) -> dict[str, Any]:
    """The view's attributes, from the schema metadata of the errors file ``rel``."""
    import pyarrow.parquet as pq

    try:
        data = store.read(rel)
    except OSError:
        return {}
    meta = pq.read_schema(io.BytesIO(data)).metadata or {}
    return json.loads(meta.get(META_KEY, b"{}")).get("attrs", {})


@dataclass
class TableResult:
    """An open Parquet or npy output: ``names``, ``outputs`` (numpy), ``errors``, ``columns``."""

    names: list[str]
    outputs: dict[str, np.ndarray]
    errors: list[ErrorRow]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    def __getitem__(self, key: str) -> np.ndarray:
        return self.outputs[key]

    def __enter__(self) -> TableResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held open: everything was read on ``open``."""


def merge(names: list[list[str]], outputs: dict[str, list[np.ndarray]],
          columns: list[dict[str, list[Any]]], errors: list[ErrorRow],
          attrs: dict[str, Any], shapes: dict[str, list[int]]) -> TableResult:
    """Concatenate per-shard pieces into one ``TableResult`` (empty outputs keep their shape)."""
    keys = list(dict.fromkeys(k for part in columns for k in part))
    merged_columns = {k: [v for part, n in zip(columns, names, strict=True)
                          for v in part.get(k, [None] * len(n))] for k in keys}
    arrays = {k: np.concatenate(v) if v else np.zeros((0, *shapes.get(k, [])), np.float32)
              for k, v in outputs.items()}
    return TableResult([n for part in names for n in part], arrays, errors, merged_columns, attrs)
