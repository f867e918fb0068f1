"""Image-text pairs (``--modality image+text``): one row holds a sample's pixels and its tokens.

A sample is read as an image (a Parquet row's image cell, a tar sample's image member) with its
caption carried beside it as a column (the Parquet ``--text-column``, the tar's ``.txt`` member or
a ``.json`` field): the sources need nothing new. The loader tokenizes the batch's captions in one
call (``loader.text``), decodes each image once into the pixel segment and writes the token ids and
the attention mask after it, as float32 (ids below 2**24 are exact in float32; the model casts them
back). A sample without a caption, or without an image, is an error row saying which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .messages import BatchTask
from .multi import Segment, fill_row
from .process import ImageFill
from .text import TextEncoding


@dataclass(frozen=True)
class Paired:
    """One opened sample: image bytes, its tokens and its carried columns."""

    data: bytes
    ids: np.ndarray
    mask: np.ndarray
    columns: dict[str, Any]


@dataclass
class PairFill:
    """Fill ``[pixels | ids | mask]`` rows (see the module docstring). ``caption`` is the column
    the caption arrives in; ``keep`` whether the user also keeps it as a column."""

    segment: Segment
    encoding: TextEncoding
    caption: str
    keep: bool
    max_pixels: int
    options: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # both made in the loader process, on first use
    tokenize: Any = field(default=None, repr=False)

    def open_batch(self, task: BatchTask) -> list[Any]:
        from ..transforms import ItemError

        items = ImageFill.open_batch(self, task)  # type: ignore[arg-type]
        if self.tokenize is None:
            self.tokenize = self.encoding.tokenizer()
        texts: dict[int, str] = {}
        for index, item in enumerate(items):
            if isinstance(item, ItemError):
                continue
            text = item.columns.get(self.caption)
            if text is None or not str(text).strip():
                items[index] = ItemError("read", f"no caption ({self.caption!r} is "
                                                 f"{'missing' if text is None else 'blank'})")
            else:
                texts[index] = str(text)
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        try:
            if texts:
                ids, mask = self.tokenize(list(texts.values()))
                rows = {i: (ids[k], mask[k]) for k, i in enumerate(texts)}
        except Exception:  # one caption the tokenizer rejects must cost that sample only
            for index, text in texts.items():
                try:
                    ids, mask = self.tokenize([text])
                    rows[index] = (ids[0], mask[0])
                except Exception as exc:
                    items[index] = ItemError("tokenize", f"{type(exc).__name__}: {exc}")
        for index, (ids, mask) in rows.items():
            item = items[index]
            columns = item.columns if self.keep else {
                k: v for k, v in item.columns.items() if k != self.caption}
            items[index] = Paired(item.data, ids, mask, columns)
        return items

    def __call__(self, item: Paired, row: np.ndarray, task: BatchTask,
                 index: int) -> dict[str, Any]:
        size, length = self.segment.size, self.encoding.length
        fill_row(item.data, row, (self.segment,), self.max_pixels)
        row[size:size + length] = item.ids
        row[size + length:size + 2 * length] = item.mask
        return item.columns
