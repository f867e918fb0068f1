"""npy output, the layout embedding-reader and autofaiss read as is.

``OUT/<output>/shard-N.npy`` holds the output rows of shard N (``float32``, shape
``(rows, *output shape)``) and ``OUT/metadata/shard-N.parquet`` its ``name`` and carried columns in
the same row order; the files of one shard share their stem, so a reader that pairs
``<output>/*.npy`` with ``metadata/*.parquet`` by name (embedding-reader's ``NumpyReader`` with
``metadata_folder``) gets rows matching names. Error rows are in the markers and, after each run, in
``OUT/errors.parquet``. A shard with no readable input writes no file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..marker import Marker
from ..store import Store
from . import table as tb
from .base import ErrorRow, Writer, check_columns
from .parquet import ERRORS_FILE, ErrorsView, read_tables
from .rules import NPY_METADATA as METADATA


class NpySink(ErrorsView):
    format = "npy"
    view = f"<output>/*.npy + {METADATA}/*.parquet ({ERRORS_FILE})"
    view_files = (ERRORS_FILE,)

    def folders(self, outputs: Sequence[str]) -> list[str]:
        return [METADATA, *outputs]

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[ErrorRow], columns: dict[str, list[Any]]) -> dict[str, Writer]:
        if not names:
            return {}
        check_columns(columns, outputs, len(names))
        parts: dict[str, Writer] = {}
        for key, value in outputs.items():
            array = np.ascontiguousarray(value, dtype=np.float32)
            parts[f"{key}/{shard_name}.npy"] = lambda path, a=array: _save(path, a)
        # the metadata goes last: a reader pairing files by stem finds arrays for every row
        table = tb.shard_table(names, {}, columns)
        parts[f"{METADATA}/{shard_name}.parquet"] = lambda path: tb.write_parquet(path, table)
        return parts

    def open(self, store: Store, markers: Sequence[Marker],
             outputs: Sequence[str]) -> tb.TableResult:
        return read_tables(store, markers, outputs, _shard)


def _save(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _shard(store: Store, marker: Marker, keys: list[str]) -> Any:
    import pyarrow as pa

    name = marker.name
    meta = f"{METADATA}/{name}.parquet"
    if meta not in marker.files:
        return None
    table = tb.read_parquet(store, meta)
    shapes = {}
    for key in keys:
        array = np.load(io.BytesIO(store.read(f"{key}/{name}.npy")))
        flat = array.reshape(len(array), -1)
        table = table.append_column(key, pa.FixedSizeListArray.from_arrays(
            pa.array(flat.ravel()), flat.shape[1]))
        shapes[key] = list(array.shape[1:])
    return table.replace_schema_metadata({tb.META_KEY: json.dumps({"shapes": shapes})})
