"""Parquet tables: one row is one item; its image is a bytes cell, or a path relative to the table;
with ``--modality text`` its caption is a string cell (``text_column``, default the first of
``caption text txt``; a null or blank cell is an error row).

Listing (driver): only each file's footer and the key column are read (``pyarrow``), never the
image column. The image column is ``image_column`` or the first of ``jpg png webp image img``
holding bytes or a Hugging Face ``{bytes, path}`` struct; ``path_column`` instead names a column of
paths (relative to the table's folder) or URLs. Names come from ``key_column`` (default ``key`` when
present), else ``<file>:<row>``. Unknown columns and tables without rows are SpecErrors.

Opening (loader): rows are read by row group, only the needed columns; each loader keeps the last
row group it read, because a batch's neighbours come from the same group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ItemError, SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Listing, Opened, Opener, SourceKind, display_name
from .files import common_root

AUTO_COLUMNS = ("jpg", "png", "webp", "image", "img")
AUTO_TEXT_COLUMNS = ("caption", "text", "txt")


def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SpecError("Parquet sources need pyarrow: pip install 'gristmill[parquet]'") from None
    return pq


def _parquet_file(location: str) -> Any:
    return _pq().ParquetFile(storage.open_file(location))


def _is_image_type(field_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
        return True
    return pa.types.is_struct(field_type) and field_type.get_field_index("bytes") >= 0


def _image_column(schema: Any, options: dict[str, Any], where: str) -> str:
    names = schema.names
    chosen = options.get("image_column") or ""
    if chosen:
        if chosen not in names:
            raise SpecError(f"--image-column {chosen}: {where} has no such column "
                            f"(columns: {', '.join(names)})")
        return chosen
    for name in AUTO_COLUMNS:
        if name in names and _is_image_type(schema.field(name).type):
            return name
    raise SpecError(f"{where} has no image bytes column ({'/'.join(AUTO_COLUMNS)}): "
                    f"give --image-column or --path-column (columns: {', '.join(names)})")


def _text_column(schema: Any, options: dict[str, Any], where: str) -> str:
    import pyarrow as pa

    names = schema.names
    chosen = options.get("text_column") or ""
    if not chosen:
        chosen = next((n for n in AUTO_TEXT_COLUMNS if n in names), "")
        if not chosen:
            raise SpecError(f"{where} has no text column ({'/'.join(AUTO_TEXT_COLUMNS)}): give "
                            f"--text-column (columns: {', '.join(names)})")
    elif chosen not in names:
        raise SpecError(f"--text-column {chosen}: {where} has no such column "
                        f"(columns: {', '.join(names)})")
    kind = schema.field(chosen).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)):
        raise SpecError(f"--text-column {chosen}: {where} holds {kind} there, not text")
    return chosen


def _check_table(schema: Any, options: dict[str, Any], where: str) -> dict[str, str]:
    names = schema.names
    read: dict[str, str] = {}
    if options.get("modality") == "text":
        read["text_column"] = _text_column(schema, options, where)
    elif options.get("path_column"):
        if options["path_column"] not in names:
            raise SpecError(f"--path-column {options['path_column']}: {where} has no such "
                            f"column (columns: {', '.join(names)})")
        read["path_column"] = options["path_column"]
    else:
        read["image_column"] = _image_column(schema, options, where)
    key = options.get("key_column") or ""
    if key and key not in names:
        raise SpecError(f"--key-column {key}: {where} has no such column "
                        f"(columns: {', '.join(names)})")
    read["key_column"] = key or ("key" if "key" in names else "")
    missing = [c for c in options.get("keep_columns") or () if c not in names]
    if missing:
        raise SpecError(f"--keep-columns {','.join(missing)}: {where} has no such column "
                        f"(columns: {', '.join(names)})")
    return read


def list_tables(tables: Sequence[str], root: str, options: dict[str, Any]) -> Listing:
    """Every row of ``tables`` (footer + key column only); SpecError if a column is wrong."""
    listing = Listing(names=[], kind=Kind.TABLE, containers=[storage.redact(t) for t in tables])
    starts: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    containers: list[np.ndarray] = []
    read: dict[str, str] = {}
    for index, table in enumerate(tables):
        where = f"table {storage.redact(table)}"
        try:
            pf = _parquet_file(table)
        except (OSError, ValueError) as exc:
            raise SpecError(f"{where} cannot be read: {exc}") from None
        read = _check_table(pf.schema_arrow, options, where)
        counts = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        total = sum(counts)
        if not total:
            continue
        starts.append(np.repeat(np.arange(len(counts), dtype=np.int64), counts))
        sizes.append(np.concatenate([np.arange(c, dtype=np.int64) for c in counts if c]))
        containers.append(np.full(total, index, dtype=np.int32))
        if read["key_column"]:
            keys = pf.read(columns=[read["key_column"]]).column(0).to_pylist()
            listing.names += [str(k).encode() for k in keys]
        else:
            rel = os.path.relpath(table, root) if not storage.is_url(table) else (
                table[len(root):].lstrip("/"))
            listing.names += [f"{rel}:{i}".encode() for i in range(total)]
    if not listing.names:
        raise SpecError(f"table source {storage.redact(tables[0])} has no rows")
    listing.start = np.concatenate(starts)
    listing.size = np.concatenate(sizes)
    listing.container = np.concatenate(containers)
    _check_unique(listing, read["key_column"])
    listing.options = {"image_column": read.get("image_column", ""),
                       "path_column": read.get("path_column", ""),
                       **({"text_column": read["text_column"]} if "text_column" in read else {}),
                       "keep": list(options.get("keep_columns") or ())}
    return listing


def _check_unique(listing: Listing, key_column: str) -> None:
    """SpecError naming the first repeated key and its table(s)."""
    if len(set(listing.names)) == len(listing.names):
        return
    seen: dict[bytes, int] = {}
    for name, index in zip(listing.names, listing.container.tolist(), strict=True):
        if name in seen:
            other, tables = seen[name], listing.containers
            where = (f"both {tables[other]} and {tables[index]}" if other != index
                     else f"{tables[index]} twice")
            raise SpecError(f"--key-column {key_column}: key {display_name(name)!r} is in "
                            f"{where}; name a column of unique keys")
        seen[name] = index


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class TableReader:
    """Reads rows of tables by row group, keeping the last group (one per loader process)."""

    def __init__(self) -> None:
        self._key: tuple[str, int] | None = None
        self._group: Any = None

    def group(self, location: str, index: int, columns: list[str]) -> Any:
        if self._key != (location, index):
            self._group = None  # release the previous group before reading the next
            self._group = storage.retrying(storage.redact(location), lambda: _parquet_file(
                location).read_row_group(index, columns=columns))
            self._key = (location, index)
        return self._group

    def open(self, refs: Sequence[ItemRef], options: dict[str, Any]) -> list[Any]:

        image, path_col = options.get("image_column", ""), options.get("path_column", "")
        text = options.get("text_column", "")
        keep = list(options.get("keep", ()))
        main = text or image or path_col
        columns = [main, *[c for c in keep if c != main]]
        out: list[Any] = []
        for r in refs:
            location = str(r.location)
            try:
                group = self.group(location, r.start, columns)
            except Exception as exc:  # a corrupt or vanished table: this row is an error row
                out.append(ItemError("read", f"{storage.redact(location)} row group {r.start}: "
                                             f"{type(exc).__name__}: {exc}"))
                continue
            row = {c: group.column(c)[r.size].as_py() for c in columns}
            try:
                data = (_cell_text(row[main], main) if text else
                        _cell_bytes(row[main], location, main, bool(path_col)))
            except ItemError as exc:
                out.append(exc)
                continue
            out.append(Opened(data, {c: _plain(row[c]) for c in keep}))
        return out


def _cell_text(cell: Any, column: str) -> bytes:
    """A caption cell as UTF-8 bytes (a null or blank cell is an error row)."""
    if cell is None or not str(cell).strip():
        raise ItemError("read", f"column {column!r} is {'null' if cell is None else 'blank'}")
    return str(cell).encode("utf-8")


def _cell_bytes(cell: Any, table: str, column: str, is_path: bool) -> bytes:
    if isinstance(cell, dict):  # Hugging Face Image: {bytes, path}
        cell, is_path = (cell.get("bytes"), False) if cell.get("bytes") else (
            cell.get("path"), True)
    if cell is None or cell in (b"", ""):
        raise ItemError("read", f"column {column!r} is null")
    if not is_path:
        return bytes(cell)
    path = str(cell)
    if not storage.is_url(path) and not os.path.isabs(path):
        path = table.rsplit("/", 1)[0] + "/" + path
    return storage.read_object(path)


def list_table_inputs(tables: list[str], options: dict[str, Any]) -> InputList:
    """Every row of ``tables``, named relative to their common folder when they have no keys."""
    root = os.fsdecode(common_root([os.fsencode(t.rsplit("/", 1)[0]) for t in tables]))
    return InputList.from_listing(list_tables(tables, root, options))


def _open_tables(options: dict[str, Any]) -> Opener:
    reader = TableReader()  # one per loader: it keeps the last row group between batches
    return lambda refs: reader.open(refs, options)


KIND = SourceKind(
    Kind.TABLE, "Parquet", suffix=".parquet",
    reads=("image_column", "path_column", "key_column", "text_column", "keep_columns"),
    modalities=("image", "text"), list=list_table_inputs, opener=_open_tables)
