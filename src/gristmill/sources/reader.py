"""Opening a batch's items inside a loader process: ``ItemRef``s in, bytes (or ItemErrors) out.

Consecutive items of one tar, or lines of one text file, are read with one range read, of one table
by row group; loose files one by one. Every failure is an ``ItemError`` in the item's place (the
batch goes on); the reader never raises for a bad item.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from . import storage
from .base import ItemRef, Kind, Opened
from .lines import open_line_run
from .tables import TableReader
from .tars import open_tar_run


def open_file_item(location: bytes | str) -> Opened:
    from ..transforms import ItemError, read_bytes

    text = location.decode("utf-8", "surrogateescape") if isinstance(location, bytes) else (
        location)
    if not storage.is_url(text):
        return Opened(read_bytes(location if isinstance(location, bytes) else location.encode()))
    try:
        data = storage.read_range(text, 0, None)
    except OSError as exc:
        raise ItemError("read", f"{storage.redact(text)}: "
                                f"{exc.strerror or type(exc).__name__}") from None
    if not data:
        raise ItemError("read", "empty file")
    return Opened(data)


class BatchReader:
    """Opens batches of items; holds one loader's row-group cache (see ``tables``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.tables = TableReader()

    def open(self, refs: Sequence[ItemRef]) -> list[Any]:
        """One ``Opened`` or ``ItemError`` per ref, in order."""
        from ..transforms import ItemError

        out: list[Any] = []
        for (kind, _), run in itertools.groupby(refs, key=lambda r: (r.kind, r.location)):
            group = list(run)
            if kind == Kind.TAR:
                out += open_tar_run(group, self.options)
            elif kind == Kind.TABLE:
                out += self.tables.open(group, self.options)
            elif kind == Kind.LINE:
                out += open_line_run(group)
            else:
                for ref in group:
                    try:
                        out.append(open_file_item(ref.location))
                    except ItemError as exc:
                        out.append(exc)
        return out
