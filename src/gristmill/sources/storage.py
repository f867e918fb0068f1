"""Where bytes live: local paths, or object-storage URLs (``s3://``, ``gs://``, ``az://``) through
fsspec.

Runs in the driver (listing) and in loader processes (reads). Credentials and endpoints are taken
the way the storage libraries take them (``AWS_ENDPOINT_URL``, ``~/.aws``, fsspec config): gristmill
never receives, stores nor logs them. A URL is recorded without any ``user:password@`` part.

Reads of remote objects retry transient errors (``RETRIES`` attempts, doubling backoff); a missing
object or a refused one is not transient and raises at once (the caller makes it an error row).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ItemError, SpecError

log = logging.getLogger(__name__)

RETRIES = 4
BACKOFF_SECONDS = 0.2
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure"}
_PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
T = TypeVar("T")


def is_url(path: str | bytes) -> bool:
    text = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
    return bool(_URL.match(text)) and not text.startswith("file://")


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part (safe to store and log)."""
    return re.sub(r"^([a-zA-Z][\w+.\-]*://)[^/@]*@", r"\1", url)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL; SpecError naming the extra to install."""
    try:
        import fsspec
    except ImportError:
        raise SpecError(f"{redact(url)}: object storage needs fsspec: "
                        "pip install 'gristmill[s3]' (or [gcs], [azure])") from None
    scheme = _URL.match(url).group(1).lower()  # type: ignore[union-attr]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        extra = _EXTRAS.get(scheme, scheme)
        raise SpecError(f"{redact(url)}: reading {scheme}:// needs "
                        f"{_PACKAGES.get(extra, 'its fsspec package')}: "
                        f"pip install 'gristmill[{extra}]'") from None
    except ValueError as exc:
        raise SpecError(f"{redact(url)}: {exc}") from None


def split_url(url: str) -> tuple[str, str]:
    """('s3://', 'bucket/key') for a URL; ('', path) for a local path."""
    m = _URL.match(url)
    return (m.group(0), url[m.end():]) if m and is_url(url) else ("", url)


def retrying(what: str, call: Callable[[], T]) -> T:
    """``call()``, retried with backoff on transient errors; permanent ones raise at once."""
    delay = BACKOFF_SECONDS
    for attempt in range(1, RETRIES + 1):
        try:
            return call()
        except _PERMANENT:
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            if attempt == RETRIES:
                raise
            log.debug("transient error reading %s (attempt %d): %s", what, attempt,
                      type(exc).__name__)
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def read_range(location: str, start: int, stop: int | None) -> bytes:
    """Bytes [start, stop) of a local file or remote object (stop None: to the end)."""
    if not is_url(location):
        with open(location, "rb") as f:
            if start:
                f.seek(start)
            return f.read() if stop is None else f.read(stop - start)
    fs, path = filesystem(location)
    return retrying(redact(location), lambda: fs.cat_file(path, start=start or None, end=stop))


def glob_any(pattern: str) -> list[str]:
    """Files (not folders) matching a local or remote glob pattern, sorted."""
    if not is_url(pattern):
        import glob

        return sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    fs, path = filesystem(pattern)
    scheme, _ = split_url(pattern)
    return sorted(scheme + p for p in retrying(redact(pattern), lambda: fs.glob(path)))


def read_error(location: str, exc: OSError) -> ItemError:
    """The error row of an input whose bytes could not be read (its URL redacted)."""
    return ItemError("read", f"{redact(location)}: {exc.strerror or type(exc).__name__}")


def read_object(location: str | bytes) -> bytes:
    """The whole object or file holding one input, for a loader: unreadable or empty is an
    ``ItemError("read")`` (a local file's message is the system's, without the path the error
    row names already; a URL is named, redacted)."""
    text = location.decode("utf-8", "surrogateescape") if isinstance(location, bytes) else (
        location)
    if is_url(text):
        try:
            data = read_range(text, 0, None)
        except OSError as exc:
            raise read_error(text, exc) from None
    else:
        try:
            with open(location, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ItemError("read", exc.strerror or str(exc)) from None
    if not data:
        raise ItemError("read", "empty file")
    return data


def open_file(location: str, mode: str = "rb") -> Any:
    """A file object for a local path or remote object (seekable; remote reads are ranged)."""
    if not is_url(location):
        return open(location, mode)
    fs, path = filesystem(location)
    return retrying(redact(location), lambda: fs.open(path, mode))


def exists(location: str) -> bool:
    if not is_url(location):
        return os.path.exists(location)
    fs, path = filesystem(location)
    return bool(retrying(redact(location), lambda: fs.exists(path)))


def missing(locations: list[str]) -> list[str]:
    """Those of ``locations`` that do not exist, by one listing of each folder they are in (a
    brace range of 100,000 objects is one listing per prefix, not 100,000 requests)."""
    folders: dict[str, list[str]] = {}
    for loc in locations:
        folders.setdefault(loc.rsplit("/", 1)[0] if "/" in loc else ".", []).append(loc)
    gone = []
    for folder, wanted in folders.items():
        try:
            if is_url(folder):
                fs, path = filesystem(folder)
                listed = retrying(redact(folder), lambda fs=fs, path=path: fs.ls(path,
                                                                                detail=False))
            else:
                listed = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            listed = []  # nothing there can be read: every one of them is missing
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in listed}
        gone += [w for w in wanted if w.rsplit("/", 1)[-1] not in names]
    return gone


def isdir(location: str) -> bool:
    if not is_url(location):
        return os.path.isdir(location)
    fs, path = filesystem(location)
    return bool(retrying(redact(location), lambda: fs.isdir(path)))
