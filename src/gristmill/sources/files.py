"""Loose files: folders, list files and glob patterns, on a local disk or in object storage.

Runs in the driver. Each input is recorded by its path relative to the source root (a folder, the
directory holding a list's entries, a glob's fixed prefix; the common parent when several sources
are given), so two ``cat.jpg`` in different folders never collide. Order is sorted by those bytes,
so the same sources always give the same list. Files are kept as raw bytes (``os.fsencode``): names
that are not UTF-8 still open, and are shown with backslash escapes. A root may be a URL
(``s3://bucket/photos``): the same rules apply, listed through fsspec.

A local folder walk follows symbolic links to folders once (loops are cut by device+inode) and keeps
entries with an image extension that are not folders, including broken links: those reach the
loader and are recorded in ``errors`` with their reason rather than vanishing silently.
"""

from __future__ import annotations

import glob
import itertools
import operator
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..errors import ItemError, SpecError
from . import storage
from .base import InputList, ItemRef, Kind, Opened, Opener, SourceKind

IMAGE_EXTENSIONS = frozenset(
    b".jpg .jpeg .jpe .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm".split()
)


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


def _remote_folder(url: str) -> tuple[bytes, list[bytes]]:
    fs, path = storage.filesystem(url)
    scheme, _ = storage.split_url(url)
    found = storage.retrying(storage.redact(url), lambda: fs.find(path))
    keep = [os.fsencode(scheme + p) for p in sorted(found)
            if os.path.splitext(p)[1].lower().encode() in IMAGE_EXTENSIONS]
    return os.fsencode(url.rstrip("/")), keep


def _remote_glob(url: str) -> tuple[bytes, list[bytes]]:
    import glob as globlib

    fs, path = storage.filesystem(url)
    scheme, rest = storage.split_url(url)
    fixed = []
    for part in rest.split("/"):
        if globlib.has_magic(part):
            break
        fixed.append(part)
    found = storage.retrying(storage.redact(url), lambda: fs.glob(path))
    return os.fsencode(scheme + "/".join(fixed)), [os.fsencode(scheme + p) for p in found]


def _remote_list(url: str) -> tuple[bytes, list[bytes]]:
    data = storage.read_range(url, 0, None)
    if b"\0" in data[:4096]:
        raise SpecError(f"source {storage.redact(url)} is neither a folder nor a text list "
                        "of paths")
    scheme, path = storage.split_url(url)
    base = os.fsencode(path.rsplit("/", 1)[0])
    entries = []
    for line in data.splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):  # keys are not paths: resolve ../ ourselves
            entries.append(line if storage.is_url(line) else scheme.encode() + posixpath.normpath(
                base + b"/" + line))
    roots = list({p.rpartition(b"/")[0] for p in entries})
    return (common_root(roots) if entries else os.fsencode(url.rsplit("/", 1)[0])), entries


def common_root(roots: list[bytes]) -> bytes:
    """The common parent of local paths or of URLs of one scheme; SpecError if they mix."""
    schemes = {storage.split_url(os.fsdecode(r))[0] for r in roots}
    if len(schemes) > 1:
        raise SpecError("sources must all be local or all on the same storage, got "
                        + " and ".join(sorted(s or "local paths" for s in schemes)))
    scheme = schemes.pop()
    if len(set(roots)) == 1:
        return roots[0]
    cut = len(scheme)
    return scheme.encode() + os.path.commonpath([r[cut:] or b"/" for r in roots])


def find_files(source: str) -> tuple[bytes, list[bytes]]:
    """(root, files) of one folder, list file or glob source; SpecError if it has none."""
    if storage.is_url(source):
        import glob as globlib

        if globlib.has_magic(source):
            root, found = _remote_glob(source)
        elif storage.isdir(source):
            root, found = _remote_folder(source)
        elif storage.exists(source):
            root, found = _remote_list(source)
        else:
            raise SpecError(f"source {storage.redact(source)} does not exist")
    elif os.path.isdir(source):
        root = os.path.abspath(os.fsencode(source))
        found = list(_walk(root))
    elif glob.has_magic(source) and not os.path.exists(source):
        root, found = _glob(source)
    elif os.path.isfile(source):
        root, found = _read_list(source)
        if found:
            root = common_root(list({p.rpartition(b"/")[0] or b"/" for p in found}))
    elif os.path.lexists(source):
        raise SpecError(f"source {source} is neither a folder nor a file list")
    else:
        raise SpecError(f"source {source} does not exist")
    if not found:
        raise SpecError(f"source {storage.redact(source)} has no image files")
    return root, found


# a list file holding any of these needs the general rules (blank, commented, absolute, dotted or
# padded lines; "//" or "/." inside a path; Windows line ends); the others are plain names
_NOT_PLAIN = (b"\r", b"\t", b"\0", b"\n ", b" \n", b"\n\n", b"\n/", b"\n.", b"\n#", b"/\n",
              b"//", b"/.")


def _plain_list(path: str) -> InputList | None:
    """A local list file of plain relative names (the common case of a ten-million-line list),
    listed with one bytes object per name and no other per-name work in Python; None when any
    line needs the general rules of ``_read_list`` (which give the same names and root)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None  # the general path says why, in one line
    data = data[:-1] if data.endswith(b"\n") else data
    if (not data or data.startswith((b"/", b".", b"#", b" ")) or data.endswith((b" ", b"/"))
            or any(token in data for token in _NOT_PLAIN)):
        return None
    # the entries' deepest common folder is the root (as ``find_files`` decides for any list):
    # the longest folder prefix of the first line that starts every line, cut off before the
    # split so that the names are made once
    breaks = data.count(b"\n")
    first = data[:data.find(b"\n")] if breaks else data
    prefix = b""
    for folder in itertools.accumulate(part + b"/" for part in first.split(b"/")[:-1]):
        if not (data.startswith(folder) and data.count(b"\n" + folder) == breaks):
            break
        prefix = folder
    if prefix:
        data = data[len(prefix):].replace(b"\n" + prefix, b"\n")
    lines = data.split(b"\n")
    del data
    lines.sort()
    if any(map(operator.eq, lines, itertools.islice(lines, 1, None))):
        lines = [name for name, _ in itertools.groupby(lines)]
    base = os.path.dirname(os.path.abspath(os.fsencode(path)))
    root = os.path.normpath(os.path.join(base, prefix)) if prefix else base
    return InputList.from_sorted(root, lines)


def list_files(sources: Iterable[str]) -> InputList:
    """Every input of the sources, sorted by name relative to the root; SpecError if none."""
    sources = list(sources)
    if (len(sources) == 1 and not storage.is_url(sources[0]) and os.path.isfile(sources[0])
            and not glob.has_magic(sources[0])):
        fast = _plain_list(sources[0])
        if fast is not None:
            return fast
    roots: list[bytes] = []
    paths: list[bytes] = []
    for source in sources:
        root, found = find_files(source)
        roots.append(root)
        paths.extend(found)
    root = common_root(roots)
    return InputList.from_names(root, _relative(paths, root))


def _open_files(options: dict[str, Any]) -> Opener:
    def open_refs(refs: Sequence[ItemRef]) -> list[Any]:
        out: list[Any] = []
        for ref in refs:  # one read per file: loose files share nothing
            try:
                out.append(Opened(storage.read_object(ref.location)))
            except ItemError as exc:
                out.append(exc)
        return out
    return open_refs


KIND = SourceKind(Kind.FILE, "image file", suffix="", reads=(), modalities=("image",),
                  list=lambda sources, options: list_files(sources), opener=_open_files)
