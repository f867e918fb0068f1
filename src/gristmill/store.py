"""Where OUT lives: a POSIX folder or a prefix on object storage (``s3://bucket/run1``, fsspec).

The ledger and the sinks reach OUT only through a ``Store``, so the commit protocol is written once
for both. The difference that matters is atomic publication: on a folder a file is written under a
temporary name, fsynced and renamed; an object store has no rename, but a PUT (and a multipart
upload) becomes visible whole or not at all, so a file is built locally and uploaded as its final
object. Either way a reader never sees half a file; the shard marker, published last, is what makes
a shard exist.

Credentials and endpoints come from the environment the storage library reads (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``); nothing here logs or
writes them.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import tempfile
from collections.abc import Callable
from typing import Any


def is_remote(out: str) -> bool:
    """True for an fsspec URL other than a local file (``s3://...``, ``gs://...``, ``memory://``)."""
    scheme, sep, _ = out.partition("://")
    return bool(sep) and scheme not in ("", "file")


def temp_name(path: str) -> str:
    """A temporary name beside ``path``, unique across the hosts of a cluster sharing OUT."""
    return f"{path}.{socket.gethostname()}-{os.getpid()}.tmp"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


class Store:
    """OUT as a root plus relative, ``/``-separated names."""

    def __init__(self, root: str) -> None:
        self.remote = is_remote(root)
        self.root = root.rstrip("/") if self.remote else root
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:  # imported only for object storage: a local job needs no fsspec
            import fsspec

            # no listing cache: another process publishes shards while this one reads OUT
            self._fs = fsspec.core.url_to_fs(self.root, skip_instance_cache=True,
                                             use_listings_cache=False)[0]
        return self._fs

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if self.remote else os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel)) if self.remote else os.path.exists(self.path(rel))

    def read(self, rel: str) -> bytes:
        """The whole object; FileNotFoundError when absent."""
        if self.remote:
            return self.fs.cat_file(self.path(rel))
        with open(self.path(rel), "rb") as f:
            return f.read()

    def listdir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (no error when it does not exist)."""
        if not self.remote:
            try:
                return os.listdir(self.path(rel))
            except FileNotFoundError:
                return []
        try:
            return [posixpath.basename(p.rstrip("/"))
                    for p in self.fs.ls(self.path(rel), detail=False, refresh=True)]
        except FileNotFoundError:
            return []

    def makedirs(self, rel: str) -> None:
        if not self.remote:  # object stores have no folders
            os.makedirs(self.path(rel), exist_ok=True)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.remote:
                self.fs.rm_file(self.path(rel))
            else:
                os.unlink(self.path(rel))

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Publish ``data`` at ``rel`` atomically (the old content or the whole new one)."""
        if self.remote:
            self.fs.pipe_file(self.path(rel), data)
        else:
            write_atomic(self.path(rel), data)

    def publish(self, rel: str, write: Callable[[str], None],
                abort: Callable[[], bool] = lambda: False) -> bool:
        """Build a file with ``write(local_path)`` and publish it whole at ``rel``.

        ``abort()`` is asked once the file is built and before it is published: True drops it
        (another attempt already committed the shard). Returns whether it was published.
        """
        if self.remote:
            fd, tmp = tempfile.mkstemp(prefix="gristmill-", suffix=".part")
            os.close(fd)
        else:
            tmp = temp_name(self.path(rel))
        try:
            write(tmp)
            if self.remote:
                if abort():
                    return False
                self.fs.put_file(tmp, self.path(rel))
                return True
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if abort():
                return False
            os.replace(tmp, self.path(rel))
            fsync_dir(os.path.dirname(self.path(rel)))
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def local_copy(self, rel: str, folder: str) -> str:
        """A local file with the content of ``rel`` (the file itself when OUT is a folder)."""
        if not self.remote:
            return self.path(rel)
        dest = os.path.join(folder, posixpath.basename(rel))
        self.fs.get_file(self.path(rel), dest)
        return dest
