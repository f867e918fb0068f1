"""A ring of pre-allocated batch slots in one shared-memory segment.

The owner (the worker, or a training ``Loader``) creates the segment; loader processes attach by
name and write whole batches into slots; only slot ids travel through queues. Memory is bounded by
construction: ``slots * batch * item bytes``, fixed before any image is read.

Lifetime: the creator unlinks the segment when it stops. The segment is not registered with
``multiprocessing``'s resource tracker (see ``shm``): the engine unlinks a dead worker's ring, and
the semaphores named after it, by name as soon as it notices the death (``unlink``), and a
``shm.Cleaner`` does it for an owner that died with nobody watching.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass

import numpy as np

from . import shm

PREFIX = "gristmill-"


@dataclass(frozen=True)
class RingSpec:
    """Name and geometry of a ring; small and picklable, sent to every loader."""

    name: str
    slots: int
    batch: int
    item_shape: tuple[int, ...]
    dtype: str = "float32"

    @staticmethod
    def new(slots: int, batch: int, item_shape: tuple[int, ...],
            dtype: str = "float32") -> RingSpec:
        return RingSpec(new_name(), slots, batch, tuple(item_shape), dtype)

    @property
    def slot_bytes(self) -> int:
        return self.batch * int(np.prod(self.item_shape)) * np.dtype(self.dtype).itemsize


class SlotRing:
    """The slots of a ring as numpy arrays of shape ``(batch, *item_shape)``."""

    def __init__(self, spec: RingSpec, *, create: bool) -> None:
        self.spec = spec
        self.owner = create
        self._shm = shm.Segment(spec.name, spec.slots * spec.slot_bytes, create=create)
        self._views = [
            np.ndarray((spec.batch, *spec.item_shape), dtype=spec.dtype, buffer=self._shm.buf,
                       offset=i * spec.slot_bytes)
            for i in range(spec.slots)
        ]

    def view(self, slot: int) -> np.ndarray:
        return self._views[slot]

    def close(self) -> None:
        self._views = []
        with contextlib.suppress(BufferError, OSError):
            self._shm.close()
        if self.owner:  # and the semaphores named after it, should a pool's stop have failed
            unlink(self.spec.name)

    def __enter__(self) -> SlotRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_name() -> str:
    """A ring name no other ring has (this process's id and a random part)."""
    return f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"


def unlink(name: str) -> None:
    """Remove a ring's segment and its queues' semaphores by name (no error if already gone)."""
    shm.unlink_segment(name)
    shm.sweep(name + "-")
