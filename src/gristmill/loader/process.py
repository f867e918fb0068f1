"""The loader process: take a batch task, take a free slot, fill it, announce it.

Runs in a child of the worker (or of a training ``Loader``). Never imports torch or a model.
Every blocking wait has a timeout after which the loader checks that its parent is still alive, so a
killed parent never leaves loaders behind (on Linux the kernel also kills them at once: see
``launch.die_with_parent``). A bad input becomes an error entry, never an exception out of the loop.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .launch import die_with_parent
from .messages import STOP, BatchTask, Filled
from .ring import RingSpec, SlotRing

POLL_SECONDS = 1.0


def get_alive(q: Any, parent: int, timeout: float = POLL_SECONDS) -> Any:
    """``q.get()`` that gives up (returns STOP) once the parent process is gone."""
    while True:
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            if os.getppid() != parent:
                return STOP


@dataclass
class ImageFill:
    """Fill rows from a batch's items with the spec's preprocessing (the inference loader).

    ``open_batch`` reads the batch's bytes (a tar run with one range read, a table by row group:
    ``sources.reader``); the call decodes one item into its row and returns its carried columns.
    ``options`` are the input list's reader options (image key or column, kept columns).
    """

    preprocess: Any
    max_pixels: int
    options: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # made in the loader process, on first use

    def open_batch(self, task: BatchTask) -> list[Any]:
        from ..sources.base import ItemRef, Kind
        from ..sources.reader import BatchReader

        if self.reader is None:
            self.reader = BatchReader(self.options)
        refs = task.refs or tuple(ItemRef(Kind.FILE, p) for p in task.paths)
        return self.reader.open(refs)

    def __call__(self, item: Any, row: np.ndarray, task: BatchTask,
                 index: int) -> dict[str, Any]:
        from ..transforms import decode_into

        decode_into(item.data, row, self.preprocess, self.max_pixels)
        return item.columns


def _columns(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Per-row column dicts as columns (every ok row of a batch carries the same names)."""
    return {name: tuple(r.get(name) for r in rows) for name in rows[0]} if rows else {}


def loader_main(ring_spec: RingSpec, fill: Callable[..., None], tasks: Any, free: Any,
                ready: Any, parent: int) -> None:
    """Loop until STOP: fill slots with batches; each item ok or an (index, stage, reason)."""
    from ..errors import ItemError

    die_with_parent()
    try:
        if os.getppid() != parent:
            return  # the parent died while this process was starting: PDEATHSIG came too late
        ring = SlotRing(ring_spec, create=False)
    except FileNotFoundError:
        return  # the owner died and its ring was unlinked: there is nothing left to fill
    try:
        while True:
            task: BatchTask | None = get_alive(tasks, parent)
            if task is STOP:
                return
            slot = get_alive(free, parent)
            if slot is STOP:
                return
            start = time.perf_counter()
            view = ring.view(slot)
            ok: list[int] = []
            errors: list[tuple[int, str, str]] = []
            carried: list[dict[str, Any]] = []
            opener = getattr(fill, "open_batch", None)
            items = opener(task) if opener is not None else task.paths
            for index, item in enumerate(items):
                try:
                    if isinstance(item, ItemError):
                        raise item
                    columns = fill(item, view[len(ok)], task, index)
                    ok.append(index)
                    if columns:
                        carried.append(columns)
                except ItemError as exc:
                    errors.append((index, exc.stage, exc.message))
                except Exception as exc:  # a decoder bug must cost one item, not the job
                    errors.append((index, "decode", f"{type(exc).__name__}: {exc}"))
            ready.put(Filled(task.key, slot, tuple(ok), tuple(errors),
                             time.perf_counter() - start, os.getpid(), _columns(carried)))
    finally:
        ring.close()
