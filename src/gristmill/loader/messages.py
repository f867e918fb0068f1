"""What travels through the loader queues: small control messages only.

A ``BatchTask`` names the inputs of one batch; a ``Filled`` says which slot now holds it, which rows
are valid and why the others failed. Neither ever holds pixels: those stay in the slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BatchTask:
    """Fill one slot with these inputs. ``key`` identifies the batch to its consumer.

    ``indices`` are the inputs' dataset indices (training: augmentation randomness is drawn from
    ``(seed, indices[i])``, so a batch made twice is identical); empty for inference. ``refs``
    (``sources.ItemRef``s: a file, a tar sample's byte range, a table row) replace ``paths`` when
    the inputs are not all loose files.
    """

    key: tuple[int, int]
    paths: tuple[bytes, ...]
    labels: tuple[int, ...] = ()
    seed: int = 0
    indices: tuple[int, ...] = ()
    refs: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Filled:
    """Slot ``slot`` holds the batch ``key``: row r is input ``ok[r]``; ``errors`` are the rest.

    ``columns`` are the carried metadata values of the ok rows (name -> values, aligned with
    ``ok``).
    """

    key: tuple[int, int]
    slot: int
    ok: tuple[int, ...]
    errors: tuple[tuple[int, str, str], ...]
    seconds: float
    pid: int
    columns: dict[str, tuple[Any, ...]] = field(default_factory=dict)


STOP = None  # a loader that takes STOP from its task queue exits
