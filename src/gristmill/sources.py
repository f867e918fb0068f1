"""Sources: folders, list files and glob patterns become one sorted, compact list of inputs.

Runs in the driver. Each input is recorded by its path relative to the source root (a folder, the
directory holding a list's entries, a glob's fixed prefix; the common parent when several sources
are given), so two ``cat.jpg`` in different folders never collide. Order is sorted by those bytes,
so the same sources always give the same list. Files are kept as raw bytes (``os.fsencode``): names
that are not UTF-8 still open, and are shown with backslash escapes.

The list is stored as one byte buffer plus offsets (numpy), not a Python list of strings: a million
paths take tens of megabytes and nothing is copied on read in forked or spawned processes.
A folder walk follows symbolic links to folders once (loops are cut by device+inode) and keeps
entries with an image extension that are not folders, including broken links: those reach the
loader and are recorded in ``errors`` with their reason rather than vanishing silently.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import SpecError

IMAGE_EXTENSIONS = frozenset(
    b".jpg .jpeg .jpe .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm".split()
)


@dataclass(frozen=True)
class InputList:
    """Sorted input names (relative to ``root``) stored compactly."""

    root: bytes
    blob: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_names(cls, root: bytes, names: Iterable[bytes]) -> InputList:
        ordered = sorted(set(names))
        lengths = np.fromiter((len(n) for n in ordered), dtype=np.int64, count=len(ordered))
        offsets = np.zeros(len(ordered) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = np.frombuffer(b"".join(ordered), dtype=np.uint8).copy()
        return cls(root=root, blob=blob, offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def raw_range(self, start: int, stop: int) -> list[bytes]:
        data = self.blob[self.offsets[start]:self.offsets[stop]].tobytes()
        base = self.offsets[start]
        return [data[a - base:b - base] for a, b in
                zip(self.offsets[start:stop].tolist(), self.offsets[start + 1:stop + 1].tolist(),
                    strict=True)]

    def path(self, i: int) -> bytes:
        return os.path.join(self.root, self.raw(i))

    def digest(self, start: int, stop: int) -> str:
        """A hash of the names in [start, stop): the identity of one shard's inputs."""
        h = hashlib.sha1(self.blob[self.offsets[start]:self.offsets[stop]].tobytes())
        h.update((self.offsets[start:stop + 1] - self.offsets[start]).tobytes())
        return h.hexdigest()

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            np.savez(f, root=np.frombuffer(self.root, dtype=np.uint8), blob=self.blob,
                     offsets=self.offsets)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> InputList:
        with np.load(path) as data:
            return cls(root=data["root"].tobytes(), blob=data["blob"], offsets=data["offsets"])


def display_name(raw: bytes) -> str:
    """A name as text; bytes that are not UTF-8 become backslash escapes."""
    return raw.decode("utf-8", errors="backslashreplace")


def _walk(top: bytes) -> Iterator[bytes]:
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            if folder == top:
                raise SpecError(f"source {os.fsdecode(top)} cannot be read: "
                                f"{exc.strerror}") from None
            continue  # an unreadable subfolder must not abort a million-file walk
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                yield entry.path


def _read_list(path: str) -> tuple[bytes, list[bytes]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SpecError(f"source {path} cannot be read: {exc.strerror}") from None
    if b"\0" in data[:4096]:
        raise SpecError(f"source {path} is neither a folder nor a text list of paths")
    base = os.path.dirname(os.path.abspath(os.fsencode(path)))
    prefix = base.rstrip(b"/") + b"/"
    entries = []
    for line in data.splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):
            # plain relative names (the common case of a million-line list) skip normpath
            plain = (not line.startswith((b"/", b".")) and not line.endswith(b"/")
                     and b"/." not in line and b"//" not in line)
            entries.append(prefix + line if plain else os.path.normpath(os.path.join(base, line)))
    return base, entries


def _relative(paths: list[bytes], root: bytes) -> Iterator[bytes]:
    """``os.path.relpath(p, root)`` for absolute, normalised paths; a prefix cut when it can."""
    prefix = root.rstrip(b"/") + b"/"
    cut = len(prefix)
    for p in paths:
        yield p[cut:] if p.startswith(prefix) else os.path.relpath(p, root)


def _glob(pattern: str) -> tuple[bytes, list[bytes]]:
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = os.path.abspath(os.sep.join(fixed) or ".")
    found = [os.fsencode(os.path.abspath(p)) for p in glob.glob(pattern, recursive=True)
             if not os.path.isdir(p)]
    return os.fsencode(root), found


def list_inputs(sources: Iterable[str]) -> InputList:
    """Every input of the sources, sorted by name relative to the root; SpecError if none."""
    roots: list[bytes] = []
    paths: list[bytes] = []
    for source in sources:
        if os.path.isdir(source):
            root = os.path.abspath(os.fsencode(source))
            found = list(_walk(root))
        elif glob.has_magic(source) and not os.path.exists(source):
            root, found = _glob(source)
        elif os.path.isfile(source):
            root, found = _read_list(source)
            if found:
                root = os.path.commonpath(list({p.rpartition(b"/")[0] or b"/" for p in found}))
        elif os.path.lexists(source):
            raise SpecError(f"source {source} is neither a folder nor a file list")
        else:
            raise SpecError(f"source {source} does not exist")
        if not found:
            raise SpecError(f"source {source} has no image files")
        roots.append(root)
        paths.extend(found)
    root = roots[0] if len(set(roots)) == 1 else os.path.commonpath(roots)
    return InputList.from_names(root, _relative(paths, root))
