"""Image-text pairs (``--modality image+text``): one row holds a sample's pixels and its tokens.

A sample is read as an image (a Parquet row's image cell, a tar sample's image member) with its
caption carried beside it as a column (the Parquet ``--text-column``, the tar's ``.txt`` member or
a ``.json`` field): the sources need nothing new. The loader tokenizes the batch's captions in one
call per text tower (``loader.text``), decodes each image once into its pixel segments
(``loader.multi``) and writes each tower's token ids and attention mask in its token slot after
them, as float32 (ids below 2**24 are exact in float32; the model casts them back). A sample
without a caption, or without an image, is an error row saying which.
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
    """One opened sample: image bytes, its tokens (per token slot) and its carried columns."""

    data: bytes
    tokens: tuple[tuple[np.ndarray, np.ndarray], ...]
    columns: dict[str, Any]


@dataclass(frozen=True)
class TokenSlot:
    """Where one text tower's tokens sit in a row: ids at ``offset``, the mask after them."""

    offset: int
    encoding: TextEncoding

    @property
    def size(self) -> int:
        return 2 * self.encoding.length

    def view(self, rows: np.ndarray) -> np.ndarray:
        """This slot of rows ``(n, row)`` as int64 ``(n, 2, length)`` (a text tower's input)."""
        part = rows[:, self.offset:self.offset + self.size]
        return part.reshape(len(rows), 2, self.encoding.length).astype(np.int64)


@dataclass
class PairFill:
    """Fill ``[segments | ids, mask per token slot]`` rows (see the module docstring).
    ``caption`` is the column the caption arrives in; ``keep`` whether the user also keeps it as
    a column."""

    segments: tuple[Segment, ...]
    slots: tuple[TokenSlot, ...]
    caption: str
    keep: bool
    max_pixels: int
    options: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # both made in the loader process, on first use
    tokenizers: Any = field(default=None, repr=False)

    def open_batch(self, task: BatchTask) -> list[Any]:
        from ..transforms import ItemError

        items = ImageFill.open_batch(self, task)  # type: ignore[arg-type]
        if self.tokenizers is None:
            self.tokenizers = [slot.encoding.tokenizer() for slot in self.slots]
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
        tokens: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {i: [] for i in texts}
        for tokenize in self.tokenizers:
            for index, row in _tokenize(tokenize, texts, items).items():
                tokens[index].append(row)
        for index, rows in tokens.items():
            item = items[index]
            if isinstance(item, ItemError) or len(rows) != len(self.slots):
                continue
            columns = item.columns if self.keep else {
                k: v for k, v in item.columns.items() if k != self.caption}
            items[index] = Paired(item.data, tuple(rows), columns)
        return items

    def __call__(self, item: Paired, row: np.ndarray, task: BatchTask,
                 index: int) -> dict[str, Any]:
        fill_row(item.data, row, self.segments, self.max_pixels)
        for slot, (ids, mask) in zip(self.slots, item.tokens, strict=True):
            length = slot.encoding.length
            row[slot.offset:slot.offset + length] = ids
            row[slot.offset + length:slot.offset + 2 * length] = mask
        return item.columns


def _tokenize(tokenize: Any, texts: dict[int, str],
              items: list[Any]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The batch's captions tokenized in one call; one the tokenizer rejects costs its sample
    only (an error row in ``items``)."""
    from ..transforms import ItemError

    try:
        if not texts:
            return {}
        ids, mask = tokenize(list(texts.values()))
        return {i: (ids[k], mask[k]) for k, i in enumerate(texts)}
    except Exception:
        rows = {}
        for index, text in texts.items():
            try:
                ids, mask = tokenize([text])
                rows[index] = (ids[0], mask[0])
            except Exception as exc:
                items[index] = ItemError("tokenize", f"{type(exc).__name__}: {exc}")
        return rows
