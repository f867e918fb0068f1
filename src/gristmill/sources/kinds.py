"""The registry of source kinds: each kind's record (``base.SourceKind``) lives in its module.

Nothing outside this package branches on a kind: ``list_inputs`` recognises containers by the
registered suffixes and lists through the kind's record; a worker expands units through
``UNITS`` (``sources.expand``); a loader's ``BatchReader`` opens refs through the kind's opener.
"""

from __future__ import annotations

from . import files, lines, tables, tars
from .base import SourceKind, UnitKind

KINDS: dict[int, SourceKind] = {k.kind: k for k in (files.KIND, lines.KIND, tars.KIND,
                                                    tables.KIND)}
UNITS: dict[int, UnitKind] = {u.kind: u for u in (tars.UNIT, tables.UNIT)}  # expanded by workers
CONTAINERS = tuple(k for k in KINDS.values() if k.suffix)  # recognised by their files' suffix


def loose(modality: str) -> SourceKind:
    """The kind of sources that are not containers (folders, lists, globs) for ``modality``."""
    return next(k for k in KINDS.values() if not k.suffix and modality in k.modalities)


def readers(option: str, modality: str) -> list[str]:
    """The labels of the kinds that read ``option`` for ``modality`` (for messages)."""
    return [k.label for k in KINDS.values() if option in k.reads and modality in k.modalities]
