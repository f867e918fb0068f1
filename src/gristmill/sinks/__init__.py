"""Sinks: how a shard's results are stored and how the committed shards are read as one.

The registry: ``--format`` names a sink (``JobSpec.format``); ``get(format)`` imports its module
only when used. Nothing outside this package names a format: what a format's files, folders,
view and error rows are is its sink's to say (``base.Sink``); what it accepts (the names it
cannot store, whether OUT may be object storage) is ``rules.py``'s, which imports no sink.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Result, Sink

SINKS = {"hdf5": "gristmill.sinks.hdf5:Hdf5Sink",
         "parquet": "gristmill.sinks.parquet:ParquetSink",
         "npy": "gristmill.sinks.npy:NpySink"}
FORMATS = tuple(SINKS)
DEFAULT_FORMAT = "hdf5"


def get(fmt: str) -> Sink:
    """The sink of ``--format fmt`` (KeyError for a name not in ``FORMATS``)."""
    module, name = SINKS[fmt].split(":")
    return getattr(importlib.import_module(module), name)()


def every() -> list[Sink]:
    """Every format's sink: for what must know all of them (clearing an old job's files)."""
    return [get(fmt) for fmt in FORMATS]


def open_file(path: str) -> Result:
    """A view file opened by its own path (``gristmill.open("out/features.h5")``)."""
    from ..errors import SpecError

    for sink in every():
        result = sink.open_file(path)
        if result is not None:
            return result
    raise SpecError(f"{path} is not an output gristmill can open: give the OUT folder")
