"""Labelled inputs for training: the sources of ``gristmill run``, each path with a class index.

Runs in the driver (the process that makes the ``Loader``). Conventions:

- a **folder** follows torchvision's ImageFolder: the classes are the sorted names of its
  sub-folders, an image's label is the index of the sub-folder it is (at any depth) under; images
  directly in the folder get label -1. A folder without sub-folders gives label -1 everywhere.
- a **list file** has one ``path label`` line per image (``#`` comments, blank lines skipped);
  relative paths are relative to the list file; a line whose last field is not an integer is a
  path with label -1 (so a plain path list works as well).
- a **glob** pattern gives label -1.

With several folder sources the class names are the sorted union of their sub-folders. The result
is sorted by path (as ``gristmill run`` orders its inputs) and stored compactly, like ``InputList``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SpecError
from ..sources import InputList, _glob, _walk, display_name


@dataclass(frozen=True)
class LabeledInputs:
    """Absolute paths (sorted), their labels (int64, -1 = none) and the class names."""

    paths: InputList
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> bytes:
        return self.paths.raw(i)

    def name(self, i: int) -> str:
        return display_name(self.paths.raw(i))


def _folder(top: bytes) -> tuple[list[bytes], list[str | None]]:
    paths = sorted(_walk(top))
    subdirs = {os.path.relpath(p, top).split(os.sep.encode())[0] for p in paths}
    has_classes = any(os.path.isdir(os.path.join(top, d)) for d in subdirs)
    classes: list[str | None] = []
    for p in paths:
        first = os.path.relpath(p, top).split(os.sep.encode())[0]
        is_class = has_classes and os.path.isdir(os.path.join(top, first))
        classes.append(os.fsdecode(first) if is_class else None)
    return paths, classes


def _list_file(path: str) -> tuple[list[bytes], list[int]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SpecError(f"source {path} cannot be read: {exc.strerror}") from None
    base = os.path.dirname(os.path.abspath(os.fsencode(path)))
    paths, labels = [], []
    for line in data.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        head, _, last = line.rpartition(b" ")
        label = -1
        if head and last.lstrip(b"-").isdigit():
            line, label = head.strip(), int(last)
        paths.append(os.path.normpath(os.path.join(base, line)))
        labels.append(label)
    return paths, labels


def list_labeled(sources: str | Sequence[str]) -> LabeledInputs:
    """Every input of ``sources`` with its label; SpecError if a source is missing or empty."""
    if isinstance(sources, str | os.PathLike):
        sources = [os.fspath(sources)]
    found: list[tuple[bytes, int | str | None]] = []
    for source in map(os.fspath, sources):
        before = len(found)
        if os.path.isdir(source):
            paths, names = _folder(os.path.abspath(os.fsencode(source)))
            found += zip(paths, names, strict=True)
        elif glob.has_magic(source) and not os.path.exists(source):
            found += [(p, -1) for p in _glob(source)[1]]
        elif os.path.isfile(source):
            found += zip(*_list_file(source), strict=True)
        else:
            raise SpecError(f"source {source} does not exist")
        if len(found) == before:
            raise SpecError(f"source {source} has no image files")
    classes = sorted({c for _, c in found if isinstance(c, str)})
    index = {c: i for i, c in enumerate(classes)}
    merged: dict[bytes, int] = {}
    for path, c in found:
        merged[path] = index[c] if isinstance(c, str) else -1 if c is None else int(c)
    ordered = sorted(merged)
    return LabeledInputs(_compact(ordered),
                         np.fromiter((merged[p] for p in ordered), np.int64, len(ordered)),
                         tuple(classes))


def _compact(paths: Iterable[bytes]) -> InputList:
    return InputList.from_names(b"", paths)  # already sorted and unique: order is kept
