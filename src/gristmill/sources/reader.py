"""Opening a batch's items inside a loader process: ``ItemRef``s in, bytes (or ItemErrors) out.

Consecutive items of one tar, or lines of one text file, are read with one range read, of one table
by row group; loose files one by one. Every failure is an ``ItemError`` in the item's place (the
batch goes on); the reader never raises for a bad item.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .base import ItemRef, Opener
from .kinds import KINDS


class BatchReader:
    """Opens batches of items; holds one loader's openers (and their caches: a table's last
    row group) for the job's reader ``options``."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.openers: dict[int, Opener] = {}

    def open(self, refs: Sequence[ItemRef]) -> list[Any]:
        """One ``Opened`` or ``ItemError`` per ref, in order."""
        out: list[Any] = []
        for (kind, _), run in itertools.groupby(refs, key=lambda r: (r.kind, r.location)):
            opener = self.openers.get(kind)
            if opener is None:
                opener = self.openers[kind] = KINDS[kind].opener(self.options)
            out += opener(list(run))
        return out
