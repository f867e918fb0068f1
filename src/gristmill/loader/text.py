"""Tokenizing captions in the loader processes (``--modality text``).

A text batch travels like an image batch: a slot of the same ring, here ``(batch, 2, length)``
int64 (row 0 the token ids, row 1 the attention mask), filled by the loaders and read by the model.
Every caption is padded to the model's ``length`` (its ``max_position_embeddings``) and truncated
to it, as the tokenizer does with ``padding="max_length", truncation=True, max_length=length``: a
fixed slot shape, and the padding SigLIP was trained with (its pooled output is the last token).

``TextEncoding`` (small, picklable, made in the worker from the model's snapshot) says how:

- a fast tokenizer travels as its ``tokenizers`` JSON, and the loaders run it with ``tokenizers``
  alone (20 ms to import; ``transformers`` imports torch: 2 s and ~200 MB per loader), with the
  truncation and padding ``transformers`` sets on it for the same call;
- any other tokenizer (a slow, Python one) is loaded in each loader from ``folder`` with
  ``transformers.AutoTokenizer`` and called as ``transformers`` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .messages import BatchTask


@dataclass(frozen=True)
class TextEncoding:
    """How captions become token rows: the tokenizer and the fixed length."""

    length: int
    pad_id: int
    folder: str = ""  # the snapshot: a slow tokenizer is loaded from it
    tokenizer_json: str = ""  # a fast tokenizer's ``tokenizers`` JSON (then ``folder`` unused)
    padding_side: str = "right"
    truncation_side: str = "right"
    pad_token: str = ""

    @property
    def item_shape(self) -> tuple[int, int]:
        return (2, self.length)

    def tokenizer(self) -> Any:
        """A callable: list of captions -> (ids, mask), two int64 arrays (n, length)."""
        if self.tokenizer_json:
            return _FastTokenizer(self)
        return _TransformersTokenizer(self)


class _FastTokenizer:
    def __init__(self, encoding: TextEncoding) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(encoding.tokenizer_json)
        self.tok.no_truncation()
        self.tok.no_padding()
        # as transformers' fast tokenizers set the backend for this call's options
        self.tok.enable_truncation(encoding.length, direction=encoding.truncation_side)
        self.tok.enable_padding(direction=encoding.padding_side, pad_id=encoding.pad_id,
                                pad_token=encoding.pad_token, length=encoding.length)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        done = self.tok.encode_batch(texts, add_special_tokens=True)
        return (np.array([e.ids for e in done], dtype=np.int64),
                np.array([e.attention_mask for e in done], dtype=np.int64))


class _TransformersTokenizer:
    def __init__(self, encoding: TextEncoding) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(encoding.folder, local_files_only=True)
        self.length = encoding.length

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.tok(texts, padding="max_length", truncation=True, max_length=self.length,
                       return_attention_mask=True, return_tensors="np")
        return (np.asarray(out["input_ids"], dtype=np.int64),
                np.asarray(out["attention_mask"], dtype=np.int64))


@dataclass(frozen=True)
class Tokens:
    """One caption's token row and its carried columns (what ``TextFill.open_batch`` gives)."""

    ids: np.ndarray
    mask: np.ndarray
    columns: dict[str, Any]


@dataclass
class TextFill:
    """Fill rows of a ``(batch, 2, length)`` slot with tokenized captions (the text loader).

    ``open_batch`` reads the batch's captions (``sources.reader``), decodes them as UTF-8 and
    tokenizes the good ones in one call; the call copies one caption's row into the slot.
    ``options`` are the input list's reader options.
    """

    encoding: TextEncoding
    options: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # both made in the loader process, on first use
    tokenize: Any = field(default=None, repr=False)

    def open_batch(self, task: BatchTask) -> list[Any]:
        from ..errors import ItemError
        from ..sources.reader import BatchReader

        if self.reader is None:
            self.reader = BatchReader(self.options)
            self.tokenize = self.encoding.tokenizer()
        items = self.reader.open(task.refs)
        texts: dict[int, str] = {}
        for index, item in enumerate(items):
            if isinstance(item, ItemError):
                continue
            try:
                texts[index] = item.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                items[index] = ItemError("decode", f"not UTF-8 text (byte {exc.start})")
        try:
            rows = dict(zip(texts, zip(*self.tokenize(list(texts.values())), strict=True),
                            strict=True)) if texts else {}
        except Exception:  # one caption the tokenizer rejects must cost that caption only
            rows = {}
            for index, text in texts.items():
                try:
                    ids, mask = self.tokenize([text])
                    rows[index] = (ids[0], mask[0])
                except Exception as exc:
                    items[index] = ItemError("tokenize", f"{type(exc).__name__}: {exc}")
        for index, (ids, mask) in rows.items():
            items[index] = Tokens(ids, mask, items[index].columns)
        return items

    def __call__(self, item: Tokens, row: np.ndarray, task: BatchTask,
                 index: int) -> dict[str, Any]:
        row[0] = item.ids
        row[1] = item.mask
        return item.columns
