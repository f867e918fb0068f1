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
from dataclasses import dataclass, field
from typing import Any

from ..errors import ItemError, SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Opened, SourceKind, Unit, display_name
from .files import IMAGE_EXTENSIONS, _glob, _walk
from .kinds import CONTAINERS, KINDS, UNITS, loose, readers

__all__ = ["IMAGE_EXTENSIONS", "Expanded", "InputList", "ItemRef", "Kind", "Opened", "_glob",
           "_walk", "display_name", "entry_of", "expand", "list_inputs", "sample_refs"]


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

        return kind, expand_braces(source)  # the kind's listing names any that is missing
    if kind and glob.has_magic(source):
        found = storage.glob_any(source)
        if not found:
            raise SpecError(f"source {storage.redact(source)} matches no file")
        return kind, found
    if kind:
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


@dataclass
class Expanded:
    """The items of entries [start, stop) of a frozen list, as a worker runs them: names, refs,
    and per item its origin: the entry's index for an entry that is an item, ``-1 - position``
    for one found in the unit ``units[position]``. A unit that could not be read at all is in
    ``failed`` (entry index -> (its name, the ItemError)): one error row, no item."""

    names: list[bytes] = field(default_factory=list)
    refs: list[ItemRef] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    unit_index: list[int] = field(default_factory=list)  # each unit's entry index
    failed: dict[int, tuple[bytes, ItemError]] = field(default_factory=dict)
    spooled: list[str] = field(default_factory=list)  # local copies to remove after the shard


def expand(inputs: InputList, start: int, stop: int, spool: str) -> Expanded:
    """Entries [start, stop) as items, units expanded (``UNITS``); ``SourceChanged`` if a
    container changed since it was listed."""
    out = Expanded()
    if not inputs.has_units:
        out.names = inputs.raw_range(start, stop)
        out.refs = list(inputs.refs(start, stop))
        out.origin = list(range(start, stop))
        return out
    refs = inputs.refs(start, stop)
    names = inputs.raw_range(start, stop)
    for i, (name, ref) in enumerate(zip(names, refs, strict=True)):
        unit = inputs.unit(start + i)
        if unit is None:
            out.names.append(name)
            out.refs.append(ref)
            out.origin.append(start + i)
            continue
        position = -1 - len(out.units)
        out.units.append(unit)
        out.unit_index.append(start + i)
        try:
            items = UNITS[unit.ref.kind].expand(unit, spool)
        except ItemError as exc:  # the whole container is one error row, named after it
            out.failed[start + i] = (name, exc)
            continue
        local = {str(r.location) for _, r in items} - {str(unit.ref.location)}
        out.spooled += sorted(local)
        out.names += [n for n, _ in items]
        out.refs += [r for _, r in items]
        out.origin += [position] * len(items)
    return out


def sample_refs(inputs: InputList, count: int) -> list[ItemRef]:
    """About ``count`` item refs spread over the list, for a calibration; of a list of units,
    from its first readable unit (its kind's ``sample``: nothing is copied)."""
    n = len(inputs)
    if not inputs.has_units:
        picks = sorted({i * n // count for i in range(count)}) if n else []
        return [ref for i in picks for ref in inputs.refs(i, i + 1)]
    for i in range(min(n, 4)):
        unit = inputs.unit(i)
        if unit is None:
            return list(inputs.refs(i, i + 1))
        record = UNITS[unit.ref.kind]
        try:
            if record.sample is not None:
                return record.sample(unit, count)
            items = record.expand(unit, "")
        except (ItemError, SpecError):
            continue
        step = max(1, len(items) // count)
        return [ref for _, ref in items[::step][:count]]
    return []


def entry_of(items: Expanded, position: int) -> int:
    """The frozen list's entry index an item of ``items`` came from (itself, or its unit)."""
    origin = items.origin[position]
    return origin if origin >= 0 else items.unit_index[-1 - origin]
