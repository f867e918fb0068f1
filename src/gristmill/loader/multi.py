"""One decode, several preprocessings: the loader fill of a job with several models.

Each image is decoded once, at the reduced JPEG scale the largest target needs, and each distinct
preprocessing (size, crop, mean/std, order, layout, filter) is made from those pixels with its own
single resampling, into its own *segment* of the slot row. A row is one flat float32 vector: the
segments side by side, so the slot ring keeps its one geometry (``batch x row``) and the models
read their inputs as strided views of the slot (``Segment.view``). Models sharing a preprocessing
share a segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spec import Preprocess
from .messages import BatchTask
from .process import ImageFill


@dataclass(frozen=True)
class Segment:
    """Where one preprocessing's values sit in a row: ``offset`` floats in, ``shape`` each."""

    preprocess: Preprocess
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def view(self, rows: np.ndarray) -> np.ndarray:
        """This segment of rows ``(n, row)`` as ``(n, *shape)``, contiguous (a model's input)."""
        part = rows[:, self.offset:self.offset + self.size]
        return np.ascontiguousarray(part).reshape(len(rows), *self.shape)


def layout(preprocessings: Iterable[Preprocess]) -> tuple[Segment, ...]:
    """One segment per distinct preprocessing, in first-seen order."""
    segments: list[Segment] = []
    offset = 0
    for pre in preprocessings:
        if any(s.preprocess == pre for s in segments):
            continue
        segments.append(Segment(pre, offset, pre.item_shape()))
        offset += segments[-1].size
    return tuple(segments)


def row_length(segments: Sequence[Segment]) -> int:
    return sum(s.size for s in segments)


@dataclass
class MultiFill:
    """Fill a row with every segment from one decode of the item (the inference loader of a job
    with several models); reading is ``ImageFill``'s."""

    segments: tuple[Segment, ...]
    max_pixels: int
    options: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # made in the loader process, on first use

    def open_batch(self, task: BatchTask) -> list[Any]:
        return ImageFill.open_batch(self, task)  # type: ignore[arg-type]

    def __call__(self, item: Any, row: np.ndarray, task: BatchTask,
                 index: int) -> dict[str, Any]:
        fill_row(item.data, row, self.segments, self.max_pixels)
        return item.columns


def fill_row(data: bytes, row: np.ndarray, segments: Sequence[Segment], max_pixels: int) -> None:
    """Decode ``data`` once and write every segment of ``row``; ``ItemError`` on failure."""
    from ..transforms import ItemError, decode, normalize_into, resize_crop

    rgb = decode(data, [s.preprocess for s in segments], max_pixels)
    try:
        for s in segments:
            out = row[s.offset:s.offset + s.size].reshape(s.shape)
            normalize_into(resize_crop(rgb, s.preprocess), out, s.preprocess)
    except Exception as exc:
        raise ItemError("preprocess", str(exc) or type(exc).__name__) from None
