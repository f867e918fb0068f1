"""Parquet tables: one row is one item; its image is a bytes cell, or a path relative to the table;
with ``--modality text`` its caption is a string cell (``text_column``, default the first of
``caption text txt``; a null or blank cell is an error row).

Listing (driver): only each file's footer is read (``pyarrow``; concurrently on object storage),
never a row: each row group becomes a ``TABLE_PART`` unit weighing its row count, which the plan
packs into shards (a large table is cut between row groups). Expanding (worker, when the part's
shard runs): the key column of its row groups is read, or the names made from the row numbers.

The image column is ``image_column`` or the first of ``jpg png webp image img`` holding bytes or a
Hugging Face ``{bytes, path}`` struct; ``path_column`` instead names a column of paths (relative to
the table's folder) or URLs. Names come from ``key_column`` (default ``key`` when present), else
``<file>:<row>``. Unknown columns and tables without rows are SpecErrors; keys repeated across rows
are reported after the run (``duplicates.py``), never merged.

Opening (loader): rows are read by row group, only the needed columns; each loader keeps the last
row group it read, because a batch's neighbours come from the same group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import ItemError, SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Listing, Opened, Opener, SourceKind, Unit, UnitKind
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


def _footers(tables: Sequence[str]) -> list[Any]:
    """Each table's footer (``FileMetaData``), concurrently for objects (a GET's latency each)."""
    def read(table: str) -> Any:
        try:
            return storage.retrying(storage.redact(table),
                                    lambda: _parquet_file(table).metadata)
        except (OSError, ValueError) as exc:
            raise SpecError(f"table {storage.redact(table)} cannot be read: {exc}") from None

    if len(tables) > 1 and storage.is_url(tables[0]):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(32, len(tables))) as pool:
            return list(pool.map(read, tables))
    return [read(t) for t in tables]


def list_tables(tables: Sequence[str], root: str, options: dict[str, Any]) -> Listing:
    """One ``TABLE_PART`` unit per row group of ``tables`` (footers only); SpecError if a column
    is wrong or no table has a row."""
    stamps = storage.stat_present(list(tables), "table")
    names, container, start, weight = [], [], [], []
    read: dict[str, str] = {}
    for index, (table, meta) in enumerate(zip(tables, _footers(tables), strict=True)):
        where = f"table {storage.redact(table)}"
        read = _check_table(meta.schema.to_arrow_schema(), options, where)
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                names.append(f"{storage.redact(table)}#{g}".encode())
                container.append(index)
                start.append(g)
                weight.append(rows)
    if not names:
        raise SpecError(f"table source {storage.redact(tables[0])} has no rows")
    return Listing(
        names=names, kind=Kind.TABLE_PART, containers=[storage.redact(t) for t in tables],
        container=container, start=start, size=[1] * len(names), weight=weight,
        stamps=[f"{st[0]}:{st[1]}" for st in stamps],
        options={"image_column": read.get("image_column", ""),
                 "path_column": read.get("path_column", ""),
                 **({"text_column": read["text_column"]} if "text_column" in read else {}),
                 "key_column": read["key_column"], "names_root": root,
                 "keep": list(options.get("keep_columns") or ())})


def expand_part(unit: Unit, spool: str) -> list[tuple[bytes, ItemRef]]:
    """The rows of a ``TABLE_PART`` unit: names from its key column, else ``<file>:<row>``."""
    storage.check_stamp(str(unit.ref.location), unit.stamp, "table")
    location = str(unit.ref.location)
    options = unit.options
    first, count = unit.ref.start, unit.ref.size
    try:
        pf = storage.retrying(storage.redact(location), lambda: _parquet_file(location))
        meta = pf.metadata
        rows = [meta.row_group(g).num_rows for g in range(first, first + count)]
        key = options.get("key_column") or ""
        if key:
            names = [str(k).encode() for g in range(first, first + count)
                     for k in pf.read_row_group(g, columns=[key]).column(0).to_pylist()]
        else:
            root = options.get("names_root", "")
            rel = (os.path.relpath(location, root) if not storage.is_url(location)
                   else location[len(root):].lstrip("/"))
            base = sum(meta.row_group(g).num_rows for g in range(first))
            names = [f"{rel}:{i}".encode() for i in range(base, base + sum(rows))]
    except OSError as exc:
        raise storage.read_error(location, exc) from None
    except ValueError as exc:  # pyarrow's ArrowInvalid: not Parquet, or cut short
        raise ItemError("read", f"{storage.redact(location)}: {exc}") from None
    refs = [ItemRef(Kind.TABLE, location, g, r) for g, n in zip(range(first, first + count),
                                                                 rows, strict=True)
            for r in range(n)]
    return list(zip(names, refs, strict=True))


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


UNIT = UnitKind(Kind.TABLE_PART, "Parquet row groups", expand_part)
KIND = SourceKind(
    Kind.TABLE, "Parquet", suffix=".parquet",
    reads=("image_column", "path_column", "key_column", "text_column", "keep_columns"),
    modalities=("image", "text"), list=list_table_inputs, opener=_open_tables)
