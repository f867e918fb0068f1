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
from .base import InputList, ItemRef, Kind, Opened, display_name
from .files import IMAGE_EXTENSIONS, _glob, _walk, common_root, list_files
from .lines import list_lines, text_files
from .tables import list_tables
from .tars import expand_braces, list_tars

__all__ = ["IMAGE_EXTENSIONS", "InputList", "ItemRef", "Kind", "Opened", "_glob", "_walk",
           "display_name", "list_inputs"]

_SUFFIX = {".tar": Kind.TAR, ".parquet": Kind.TABLE}


def _glob_any(pattern: str) -> list[str]:
    if not storage.is_url(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    fs, path = storage.filesystem(pattern)
    scheme, _ = storage.split_url(pattern)
    return sorted(scheme + p for p in storage.retrying(storage.redact(pattern),
                                                       lambda: fs.glob(path)))


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link loop or a vanished entry: the file walk records it as a bad input
        return False


def _folder_containers(folder: str) -> tuple[Kind, list[str]] | None:
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
    for suffix, kind in _SUFFIX.items():
        found = sorted(e for e in entries if e.endswith(suffix))
        if found:
            return kind, found
    return None


def _list_containers(source: str) -> tuple[Kind, list[str]] | None:
    """A list file whose entries all end in .tar: those tars (relative to the list's folder)."""
    if storage.is_url(source):
        head = storage.read_range(source, 0, 1 << 16)
    else:
        with open(source, "rb") as f:
            head = f.read(1 << 16)
    lines = [x.strip() for x in head.splitlines() if x.strip() and not x.startswith(b"#")]
    if not lines or not all(x.endswith(b".tar") for x in lines):
        return None
    data = storage.read_range(source, 0, None)
    base = source.rsplit("/", 1)[0] if storage.is_url(source) else os.path.dirname(
        os.path.abspath(source))
    entries = [x.strip().decode() for x in data.splitlines()
               if x.strip() and not x.startswith(b"#")]
    return Kind.TAR, [e if storage.is_url(e) or os.path.isabs(e) else f"{base}/{e}"
                      for e in entries]


def classify(source: str) -> tuple[Kind, list[str]] | None:
    """(kind, containers) for a tar or table source; None for loose files."""
    suffix = next((s for s in _SUFFIX if source.endswith(s)), None)
    if suffix and "{" in source:
        found = expand_braces(source)
        missing = [p for p in found if not storage.exists(p)]
        if missing:
            raise SpecError(f"source {storage.redact(source)}: {storage.redact(missing[0])} "
                            f"does not exist ({len(missing)} of {len(found)} missing)")
        return _SUFFIX[suffix], found
    if suffix and glob.has_magic(source):
        found = _glob_any(source)
        if not found:
            raise SpecError(f"source {storage.redact(source)} matches no file")
        return _SUFFIX[suffix], found
    if suffix:
        if not storage.exists(source):
            raise SpecError(f"source {storage.redact(source)} does not exist")
        return _SUFFIX[suffix], [source]
    if glob.has_magic(source):
        return None
    if storage.isdir(source):
        return _folder_containers(source)
    if storage.exists(source):
        return _list_containers(source)
    return None


def list_inputs(sources: Iterable[str], options: Mapping[str, Any] | None = None) -> InputList:
    """Every input of ``sources`` (see the module docstring); SpecError if none or mixed kinds.

    ``options``: ``image_key`` (tars), ``image_column``, ``path_column``, ``key_column`` (tables),
    ``keep_columns`` (both).
    """
    options = dict(options or {})
    sources = list(sources)
    if options.get("modality") == "text":
        return _list_text(sources, options)
    kinds = [classify(s) for s in sources]
    if all(k is None for k in kinds):
        if options.get("keep_columns"):
            raise SpecError("--keep-columns needs tar or Parquet sources (loose files have no "
                            "columns)")
        return list_files(sources)
    if any(k is None for k in kinds) or len({k[0] for k in kinds if k}) > 1:
        raise SpecError("one job reads one kind of source: loose files, tars or Parquet tables "
                        f"(got {', '.join(storage.redact(s) for s in sources)})")
    containers = [c for k in kinds if k for c in k[1]]
    if not storage.is_url(containers[0]):
        containers = [os.path.abspath(c) for c in containers]
    wrong = ("image_column", "path_column", "key_column") if kinds[0][0] == Kind.TAR else (
        "image_key",)
    wrong += ("text_column",)  # checked by the spec too; an API caller may skip it
    given = [w for w in wrong if options.get(w)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        kind = "tar" if kinds[0][0] == Kind.TAR else "Parquet"
        raise SpecError(f"{flag} does not apply to {kind} sources")
    if kinds[0][0] == Kind.TAR:
        return InputList.from_listing(list_tars(containers, options))
    return _tables(containers, options)


def _tables(containers: list[str], options: dict[str, Any]) -> InputList:
    parents = [os.fsencode(c.rsplit("/", 1)[0]) for c in containers]
    root = os.fsdecode(common_root(parents))
    return InputList.from_listing(list_tables(containers, root, options))


def _list_text(sources: list[str], options: dict[str, Any]) -> InputList:
    """``--modality text``: Parquet tables (their text column) or text files (their lines)."""
    kinds = [classify(s) for s in sources]
    if any(k is not None and k[0] == Kind.TAR for k in kinds):
        raise SpecError("--modality text reads text files (one caption per line) or Parquet "
                        "tables (--text-column), not tars")
    if any(kinds):
        if not all(kinds):
            raise SpecError("one job reads one kind of source: text files or Parquet tables "
                            f"(got {', '.join(storage.redact(s) for s in sources)})")
        containers = [c for k in kinds if k for c in k[1]]
        if not storage.is_url(containers[0]):
            containers = [os.path.abspath(c) for c in containers]
        return _tables(containers, options)
    if options.get("text_column"):
        raise SpecError("--text-column needs Parquet sources (a text file's captions are its "
                        "lines)")
    if options.get("keep_columns"):
        raise SpecError("--keep-columns needs Parquet sources (a text file has no columns)")
    if options.get("key_column"):
        raise SpecError("--key-column needs Parquet sources (a text file's rows are named by "
                        "their line numbers)")
    files = [f for s in sources for f in text_files(s)]
    if len(set(files)) != len(files):
        raise SpecError("a text file is named twice in the sources")
    if not storage.is_url(files[0]):
        files = [os.path.abspath(f) for f in files]
    return InputList.from_listing(list_lines(files))
