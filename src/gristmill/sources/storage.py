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

from ..errors import ItemError, SourceChanged, SpecError

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


Stamp = tuple[int, str]  # (size in bytes, version: a local file's mtime_ns, an object's ETag)


def _version(info: dict[str, Any]) -> str:
    """An object's version from its listing entry: the ETag where the store gives one (S3,
    GCS, Azure), else its modification time."""
    for key in ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified",
                "mtime", "updated"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def stat_all(locations: list[str]) -> list[Stamp | None]:
    """Each location's (size, version), None where it does not exist: one listing of each
    folder they are in, so a brace range of 100,000 objects costs one listing per prefix (a
    thousand entries a request on S3), never a request per object."""
    folders: dict[str, list[int]] = {}
    for i, loc in enumerate(locations):
        folders.setdefault(loc.rsplit("/", 1)[0] if "/" in loc else ".", []).append(i)
    found: list[Stamp | None] = [None] * len(locations)
    for folder, wanted in folders.items():
        entries: dict[str, Stamp] = {}
        try:
            if is_url(folder):
                fs, path = filesystem(folder)
                listed = retrying(redact(folder), lambda fs=fs, path=path: fs.ls(path,
                                                                                detail=True))
                entries = {e["name"].rstrip("/").rsplit("/", 1)[-1]:
                           (int(e.get("size") or 0), _version(e))
                           for e in listed if e.get("type", "file") == "file"}
            else:
                with os.scandir(folder) as it:
                    for e in it:
                        if e.is_file():
                            st = e.stat()
                            entries[e.name] = (st.st_size, str(st.st_mtime_ns))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass  # nothing there can be read: every one of them is missing
        for i in wanted:
            found[i] = entries.get(locations[i].rsplit("/", 1)[-1])
    return found


def stat(location: str) -> Stamp:
    """One location's (size, version), as ``stat_all`` gives it; OSError if it cannot be read."""
    if not is_url(location):
        st = os.stat(location)
        return st.st_size, str(st.st_mtime_ns)
    fs, path = filesystem(location)
    info = retrying(redact(location), lambda: fs.info(path))
    return int(info.get("size") or 0), _version(info)


def check_stamp(location: str, stamp: str, label: str) -> None:
    """``SourceChanged`` if the container at ``location`` is not what ``stamp`` (``"size:version"``)
    says it was when listed; ``ItemError("read")`` if it cannot be read now."""
    try:
        size, version = stat(location)
    except OSError as exc:
        raise read_error(location, exc) from None
    if stamp and f"{size}:{version}" != stamp:
        was = stamp.split(":", 1)[0]
        raise SourceChanged(f"{label} {redact(location)} changed since the job listed it "
                            f"({was} bytes then, {size} now, or a new version): its results would "
                            "mix two versions; restore it, or start the job again (--overwrite)")


def stat_present(locations: list[str], label: str) -> list[Stamp]:
    """``stat_all`` of containers that must all exist: ``SpecError`` naming the first missing
    one (and how many are)."""
    found = stat_all(locations)
    gone = [loc for loc, st in zip(locations, found, strict=True) if st is None]
    if gone:
        raise SpecError(f"{label} {redact(gone[0])} does not exist "
                        f"({len(gone)} of {len(locations)} missing)")
    return [st for st in found if st is not None]


def download(location: str, path: str) -> None:
    """A remote object copied whole to the local ``path`` (one GET, retried when transient)."""
    fs, remote = filesystem(location)
    retrying(redact(location), lambda: fs.get_file(remote, path))


def isdir(location: str) -> bool:
    if not is_url(location):
        return os.path.isdir(location)
    fs, path = filesystem(location)
    return bool(retrying(redact(location), lambda: fs.isdir(path)))
