"""Sources: what a job reads, listed once into a compact, frozen ``InputList`` (see ``base``).

``list_inputs(sources, options)`` decides each source's kind:

- webdataset tars (``tars``): a ``.tar`` path, a brace range ``data/{00000..00099}.tar``, a glob
  ending in ``.tar``, a folder holding ``.tar`` files, or a list file of tars;
- Parquet tables (``tables``): a ``.parquet`` path, a glob or brace range of them, or a folder
  holding ``.parquet`` files (and no tars);
- otherwise loose image files (``files``): a folder walked recursively, a list file or a glob.

With ``modality: text`` a source is a Parquet table (its ``text_column``) or a text file of
captions, one per line (``lines``), or a glob of them.

Any of them may be a URL (``s3://``, ``gs://``, ``az://``: see ``storage``). One job reads one kind.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Opened, SourceKind, display_name
from .files import IMAGE_EXTENSIONS, _glob, _walk
from .kinds import CONTAINERS, KINDS, loose, readers

__all__ = ["IMAGE_EXTENSIONS", "InputList", "ItemRef", "Kind", "Opened", "_glob", "_walk",
           "display_name", "list_inputs"]


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link loop or a vanished entry: the file walk records it as a bad input
        return False


def _suffixed(source: str) -> SourceKind | None:
    return next((k for k in CONTAINERS if source.endswith(k.suffix)), None)


def _folder_containers(folder: str) -> tuple[SourceKind, list[str]] | None:
    if storage.is_url(folder):
        fs, path = storage.filesystem(folder)
        scheme, _ = storage.split_url(folder)
        entries = [scheme + p for p in storage.retrying(storage.redact(folder),
                                                        lambda: fs.ls(path, detail=False))]
    else:
        try:
            listed = list(os.scandir(folder))
        except OSError as exc:
            raise SpecError(f"source {folder} cannot be read: {exc.strerror}") from None
        entries = [e.path for e in listed if _is_file(e)]
    for kind in CONTAINERS:  # in registry order: a folder of tars and tables reads as tars
        found = sorted(e for e in entries if e.endswith(kind.suffix))
        if found:
            return kind, found
    return None


def _list_containers(source: str) -> tuple[SourceKind, list[str]] | None:
    """A list file whose entries all end in one container suffix: those containers (relative to
    the list's folder)."""
    if storage.is_url(source):
        head = storage.read_range(source, 0, 1 << 16)
    else:
        with open(source, "rb") as f:
            head = f.read(1 << 16)
    lines = [x.strip() for x in head.splitlines() if x.strip() and not x.startswith(b"#")]
    kind = _suffixed(lines[0].decode("utf-8", "replace")) if lines else None
    if kind is None or not all(x.endswith(kind.suffix.encode()) for x in lines):
        return None
    data = storage.read_range(source, 0, None)
    base = source.rsplit("/", 1)[0] if storage.is_url(source) else os.path.dirname(
        os.path.abspath(source))
    entries = [x.strip().decode() for x in data.splitlines()
               if x.strip() and not x.startswith(b"#")]
    return kind, [e if storage.is_url(e) or os.path.isabs(e) else f"{base}/{e}"
                  for e in entries]


def classify(source: str) -> tuple[SourceKind, list[str]] | None:
    """(kind, containers) for a source of containers (tars, tables); None for loose sources."""
    kind = _suffixed(source)
    if kind and "{" in source:
        from .tars import expand_braces

        found = expand_braces(source)
        missing = storage.missing(found)
        if missing:
            raise SpecError(f"source {storage.redact(source)}: {storage.redact(missing[0])} "
                            f"does not exist ({len(missing)} of {len(found)} missing)")
        return kind, found
    if kind and glob.has_magic(source):
        found = storage.glob_any(source)
        if not found:
            raise SpecError(f"source {storage.redact(source)} matches no file")
        return kind, found
    if kind:
        if not storage.exists(source):
            raise SpecError(f"source {storage.redact(source)} does not exist")
        return kind, [source]
    if glob.has_magic(source):
        return None
    if storage.isdir(source):
        return _folder_containers(source)
    if storage.exists(source):
        return _list_containers(source)
    return None


def list_inputs(sources: Iterable[str], options: Mapping[str, Any] | None = None) -> InputList:
    """Every input of ``sources`` (see the module docstring); SpecError if none, if the sources
    mix kinds, or if an option does not apply to their kind.

    ``options``: ``modality`` (image or text), ``image_key`` (tars), ``image_column``,
    ``path_column``, ``key_column``, ``text_column`` (tables), ``keep_columns`` (both).
    """
    options = dict(options or {})
    modality = options.get("modality") or "image"
    sources = list(sources)
    found = [classify(s) for s in sources]
    able = [k.label for k in KINDS.values() if modality in k.modalities]
    if all(f is None for f in found):
        kind, paths = loose(modality), sources
    elif any(f is None for f in found) or len({f[0].kind for f in found if f}) > 1:
        raise SpecError(f"one job reads one kind of source: {', '.join(able)} sources "
                        f"(got {', '.join(storage.redact(s) for s in sources)})")
    else:
        kind = found[0][0]
        paths = [c for f in found if f for c in f[1]]
        if not storage.is_url(paths[0]):
            paths = [os.path.abspath(c) for c in paths]
    if modality not in kind.modalities:
        raise SpecError(f"--modality {modality} reads {' or '.join(able)} sources, not "
                        f"{kind.label} sources")
    for option in sorted({o for k in KINDS.values() for o in k.reads} - set(kind.reads)):
        if options.get(option):  # checked by the spec too where it can; an API caller may skip it
            raise SpecError(f"--{option.replace('_', '-')} needs "
                            f"{' or '.join(readers(option, modality))} sources")
    return kind.list(paths, options)
