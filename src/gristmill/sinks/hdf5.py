"""HDF5 storage: one file per shard, and ``features.h5``, one view over all committed shards.

A shard file holds ``names`` (UTF-8), one dataset per output with rows aligned to ``names``, and an
``errors`` table (``name``, ``stage``, ``message``) of the inputs that could not be processed. It is
written by exactly one process (the worker that computed it) under a temporary name; the ledger
commits it.

``features.h5`` has the same dataset names: each output is an HDF5 virtual dataset whose rows map
onto the shard files in input order (no feature is copied; source paths are relative, so OUT can be
moved), ``names`` and ``errors`` are copied (small); an input that a later shard names again (a
``--retry-errors`` shard) loses its earlier error row. Carried metadata columns are copied too
(``columns/<name>``, row-aligned with ``names``; ``column_array`` gives their types). It is
rebuilt at the end of every run under a temporary name and renamed, so a reader never sees a
half-written view. HDF5 needs a POSIX folder: on object storage use parquet or npy.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..marker import IndexedError, Marker, standing_errors
from ..store import Store
from .base import marker_error_rows
from .rules import HDF5_RESERVED

VIEW_FILE = "features.h5"
STR = h5py.string_dtype("utf-8")
ERROR_DTYPE = np.dtype([("name", STR), ("stage", STR), ("message", STR)])


def write_shard(path: str, names: Sequence[str], outputs: dict[str, np.ndarray],
                errors: Sequence[tuple[str, str, str]],
                columns: dict[str, list[Any]] | None = None) -> None:
    """Write one shard file (no commit: see ``ledger.commit_parts``); OSError if the disk fails.

    ``columns`` are carried metadata (values str/int/float/bool/None), row-aligned with ``names``.
    """
    with _in_memory(path) as f:
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=STR)
        for key, value in outputs.items():
            f.create_dataset(key, data=value)
        f.create_dataset("errors", data=np.array(list(errors), dtype=ERROR_DTYPE),
                         dtype=ERROR_DTYPE, maxshape=(None,))
        if columns:
            group = f.create_group("columns")
            for key, values in columns.items():
                _write_column(group, key, column_array(values))


def column_array(values: Sequence[Any]) -> np.ndarray:
    """Values as one typed array: bool or int64 when all are (and none is missing), float64 (None
    is NaN) for numbers, else UTF-8 strings (None is "")."""
    present = [v for v in values if v is not None]
    if present and len(present) == len(values):
        if all(isinstance(v, bool) for v in present):
            return np.array(present, dtype=bool)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            return np.array(present, dtype=np.int64)
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _write_column(group: h5py.Group, key: str, array: np.ndarray) -> None:
    if array.dtype == object:
        group.create_dataset(key, data=array, dtype=STR)
    else:
        group.create_dataset(key, data=array)


def _merge_columns(parts: list[np.ndarray]) -> np.ndarray:
    """Shard columns as one: numbers if every shard's are (a shard whose values were all missing
    is NaN there), else strings."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.array([], dtype=object)
    text = [p.dtype.kind in "OSU" for p in parts]
    if any(text) and not all(text):
        blank = [t and not any(p) for p, t in zip(parts, text, strict=True)]
        if all(b or not t for b, t in zip(blank, text, strict=True)):
            parts = [np.full(len(p), np.nan) if b else p for p, b in zip(parts, blank,
                                                                           strict=True)]
            text = [False] * len(parts)
    if any(text):
        return np.concatenate([p.astype(object) if t else p.astype(str).astype(object)
                               for p, t in zip(parts, text, strict=True)])
    return np.concatenate(parts)


@contextlib.contextmanager
def _in_memory(path: str) -> Iterator[h5py.File]:
    """An HDF5 file built in memory, then written to ``path`` with one plain write.

    Why: when HDF5 itself meets a full disk it reports through its error stack and can crash the
    process while closing the file (seen: SIGSEGV in ``ObjectID.__dealloc__``); a plain write
    raises a clean ``OSError`` (ENOSPC, EFBIG, EROFS) that the caller turns into one line.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver="latest") as f:
        yield f
    with open(path, "wb") as out:
        out.write(buffer.getbuffer())


def build_view(out: str, shard_files: Sequence[str], outputs: Sequence[str],
               attrs: dict[str, Any], retried: Sequence[Sequence[str]] = ()) -> str:
    """(Re)build ``OUT/features.h5`` over ``shard_files`` (committed, in input order);
    ``retried``, per file, the names a retry shard covered (a whole tar's among them, whose
    error row its samples' rows retire)."""
    final = os.path.join(out, VIEW_FILE)
    tmp = f"{final}.{os.getpid()}.tmp"
    names: list[Any] = []
    per_shard: list[tuple[list[str], list[tuple[str, str, str]]]] = []
    columns: dict[str, list[np.ndarray]] = {}
    layouts: dict[str, list[tuple[str, tuple[int, ...], Any]]] = {k: [] for k in outputs}
    for k, path in enumerate(shard_files):
        with h5py.File(path, "r") as f:
            names.append(f["names"][()])
            per_shard.append(([_text(n) for n in names[-1]]
                              + list(retried[k] if k < len(retried) else ()),
                              [tuple(_text(x) for x in row) for row in f["errors"][()]]))
            for key, data in (f["columns"].items() if "columns" in f else ()):
                value = data.asstr()[()] if data.dtype.kind == "O" else data[()]
                columns.setdefault(key, []).append(np.asarray(value))
            for key in outputs:
                if key in f:
                    layouts[key].append((os.path.relpath(path, out), f[key].shape, f[key].dtype))
    all_names = np.concatenate(names) if names else np.array([], dtype=object)
    standing = [row[1:] for row in standing_errors(
        [(ok, [(-1, *row) for row in errs]) for ok, errs in per_shard])]
    try:
        with _in_memory(tmp) as f:
            f.create_dataset("names", data=all_names, dtype=STR)
            f.create_dataset("errors", data=np.array(standing, dtype=ERROR_DTYPE),
                             dtype=ERROR_DTYPE)
            for key, parts in layouts.items():
                _virtual(f, key, parts)
            if columns:
                group = f.create_group("columns")
                for key, column_parts in columns.items():
                    _write_column(group, key, _merge_columns(column_parts))
            for k, v in attrs.items():
                f.attrs[k] = v
        os.replace(tmp, final)
    except BaseException:  # a full disk or a stop: no half-written view left beside the old one
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return final


def _virtual(f: h5py.File, key: str, parts: list[tuple[str, tuple[int, ...], Any]]) -> None:
    rows = sum(shape[0] for _, shape, _ in parts)
    if not parts:
        f.create_dataset(key, shape=(0,), dtype="f4")
        return
    tail, dtype = parts[0][1][1:], parts[0][2]
    layout = h5py.VirtualLayout(shape=(rows, *tail), dtype=dtype)
    at = 0
    for path, shape, _ in parts:
        if shape[0]:
            layout[at:at + shape[0]] = h5py.VirtualSource(path, key, shape=shape)
        at += shape[0]
    f.create_virtual_dataset(key, layout)


@dataclass
class Result:
    """An open ``features.h5``: ``names``, each output as an h5py dataset, and ``errors``.

    Outputs read lazily (slice them like numpy arrays); use as a context manager or call
    ``close()``.
    """

    file: h5py.File

    @property
    def names(self) -> list[str]:
        return [n.decode() if isinstance(n, bytes) else n for n in self.file["names"][()]]

    @property
    def outputs(self) -> dict[str, h5py.Dataset]:
        found: dict[str, h5py.Dataset] = {}
        for key, value in self.file.items():
            if key in HDF5_RESERVED:
                continue
            if isinstance(value, h5py.Group):  # several models: NAME/OUTPUT
                found |= {f"{key}/{k}": v for k, v in value.items()}
            else:
                found[key] = value
        return found

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """Carried metadata (``--keep-columns``), each row-aligned with ``names``."""
        if "columns" not in self.file:
            return {}
        return {k: v.asstr()[()] if v.dtype.kind == "O" else v[()]
                for k, v in self.file["columns"].items()}

    @property
    def complete(self) -> bool:
        return bool(self.file.attrs.get("complete", False))

    @property
    def errors(self) -> list[tuple[str, str, str]]:
        rows = self.file["errors"][()]
        return [tuple(x.decode() if isinstance(x, bytes) else x for x in row) for row in rows]

    def __getitem__(self, key: str) -> h5py.Dataset:
        return self.file[key]

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class Hdf5Sink:
    """The ``hdf5`` format: ``shards/shard-N.h5`` and the ``features.h5`` view."""

    format = "hdf5"
    view = VIEW_FILE
    view_files = (VIEW_FILE,)

    def folders(self, outputs: Sequence[str]) -> list[str]:
        return ["shards"]

    def parts(self, shard_name: str, names: Sequence[str], outputs: dict[str, np.ndarray],
              errors: Sequence[tuple[str, str, str]],
              columns: dict[str, list[Any]]) -> dict[str, Callable[[str], None]]:
        return {f"shards/{shard_name}.h5":
                lambda path: write_shard(path, names, outputs, errors, columns)}

    def error_rows(self, store: Store, marker: Marker) -> list[IndexedError]:
        if marker.error_rows is not None:
            return marker_error_rows(marker)
        # a marker older than error rows in markers: the shard file has them (without indices)
        with h5py.File(store.path(marker.files[0]), "r") as f:
            return [(-1, *(_text(x) for x in row)) for row in f["errors"][()]]

    def refresh_view(self, store: Store, markers: Sequence[Marker], outputs: Sequence[str],
                     attrs: dict[str, Any]) -> str:
        files = [store.path(rel) for marker in markers for rel in marker.files]
        retried = [marker.retried for marker in markers for _ in marker.files]
        return build_view(store.root, files, outputs, attrs, retried)

    def open(self, store: Store, markers: Sequence[Marker], outputs: Sequence[str]) -> Result:
        return open_view(store.root)

    def open_file(self, path: str) -> Result | None:
        return open_view(path) if path.endswith(".h5") else None


def open_view(out: str) -> Result:
    """Open ``OUT/features.h5`` (virtual sources resolve relative to OUT)."""
    from ..errors import SpecError

    path = out if out.endswith(".h5") else os.path.join(out, VIEW_FILE)
    try:
        return Result(h5py.File(path, "r"))
    except OSError as exc:
        raise SpecError(f"{path} cannot be opened: {exc.strerror or exc}") from None
