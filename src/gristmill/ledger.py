"""The ledger: what is in OUT, what is committed, and the commit protocol (every output format).

Layout of OUT (a folder, or a prefix on object storage: see ``store.py``)::

    job.json              the resolved job spec (a rerun with another identity is refused)
    inputs.npz            the frozen input list of the job (resume never walks the source again);
                          append-only: ``--append`` and ``--retry-errors`` add segments at its end
    segments.json         where each segment of the list starts and why it was added (absent: one)
    shards/shard-N.json   shard N's marker, written last: its files, counts, error rows, input hash,
                          spec hash (``marker.py``)
    ...                   the shard's files and the view over every committed shard, named by the
                          format's sink (``sinks/``)
    lock                  who runs the job now: {"host", "pid", "started"} (see ``lock_out``)

What these files say together, the job as it stands, is read by ``outdir.reopen``.

Commit protocol (runs in the worker that computed the shard): each file of the shard is published
whole (folder: temporary name, fsync, rename, fsync the folder; object store: the final object
uploaded in one PUT), then the marker the same way. A shard exists for every reader only once its
marker does, so a crash at any point leaves either nothing or a whole shard; a shard computed twice
(a retry after a kill) is committed once, because a second attempt that finds the marker discards
its files. Resume reads the markers only: its cost grows with the number of shards, not of items.

One driver per OUT: a run holds an exclusive ``flock`` on ``OUT/lock`` from before its first
process starts until ``features.h5`` is built (``lock_out``); a second run is refused with the
holder's host, pid and start time. The kernel drops the lock with its holder, however that dies
(SIGKILL, OOM, power loss), so a dead driver never blocks the next run. On a filesystem without
working ``flock`` (some FUSE and SMB mounts) the lock cannot be taken: the run goes on with one
warning and nothing stops two drivers (they would compute the same shards; the commit protocol
still commits each once). NFS v4 (and v3 with lockd) locks are shared by every client. OUT on
object storage has no lock at all: one driver per prefix is the user's to keep.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import marker as markers
from . import sinks
from .errors import SpecError
from .marker import SHARDS_DIR, Marker
from .store import Store, fsync_dir, temp_name, write_atomic

log = logging.getLogger(__name__)

__all__ = ["SHARDS_DIR", "Store", "fsync_dir", "temp_name", "write_atomic"]

JOB_FILE = "job.json"
INPUTS_FILE = "inputs.npz"
SEGMENTS_FILE = "segments.json"
LOCK_FILE = "lock"
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # flock not supported


def commit_parts(store: Store, parts: dict[str, Callable[[str], None]], marker: Marker) -> bool:
    """Publish each file ``rel -> write(local_path)`` of a shard, then its marker, last.

    False (nothing more written) when the shard was already committed, before or meanwhile.
    A commit that fails part-way (a later file or the marker cannot be written: a full disk)
    removes the files it had published, so OUT holds no file of a shard that does not exist.
    """
    if markers.exists(store, marker.shard):
        return False
    published: list[str] = []
    try:
        for rel, write in parts.items():
            store.makedirs(os.path.dirname(rel))
            if not store.publish(rel, write, abort=lambda: markers.exists(store, marker.shard)):
                return False
            published.append(rel)
        markers.write(store, marker)
    except BaseException:
        _unpublish(store, marker.shard, published)
        raise
    return True


def _unpublish(store: Store, shard: int, published: list[str]) -> None:
    """Remove the files of a failed commit, unless another attempt committed the shard meanwhile
    (its files have the same names: they are now part of a shard)."""
    with contextlib.suppress(Exception):  # the commit's own error is the one to report
        if markers.exists(store, shard):
            return
        for rel in published:
            store.remove(rel)


def read_job(out: str) -> dict[str, Any] | None:
    """OUT's ``job.json`` (None when absent or unreadable)."""
    try:
        data = json.loads(Store(out).read(JOB_FILE))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_out(out: str, identity: dict[str, Any], overwrite: bool) -> bool:
    """Can this job use OUT? True when OUT already holds this very job (a resume).

    Changes nothing. Refuses (SpecError) an OUT that holds another job unless ``overwrite``, and
    a folder that cannot be created or written.
    """
    store = Store(out)
    if not store.remote:
        existing = out
        while not os.path.exists(existing):
            existing = os.path.dirname(existing) or "."
        if not os.path.isdir(existing):
            raise SpecError(f"output folder {out}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SpecError(f"output folder {out} is not writable")
    try:
        has_job = store.exists(JOB_FILE)
    except OSError as exc:
        raise SpecError(f"output {out} cannot be reached: {exc}") from None
    if has_job:
        job = read_job(out)
        same = job is not None and job.get("identity") == identity
        if not same and not overwrite:
            raise SpecError(
                f"output folder {out} holds a different job (see {store.path(JOB_FILE)}); "
                "use --overwrite to replace it or choose another -o folder")
        return same and not overwrite
    if store.listdir(SHARDS_DIR) and not overwrite:
        raise SpecError(f"output folder {out} has shards but no {JOB_FILE}; "
                        "use --overwrite or another -o folder")
    return False


def init_out(out: str, job_json: str, *, overwrite: bool,
             folders: Iterable[str] = ()) -> None:
    """Create OUT's folders, remove an old job's files if ``overwrite``, write ``job.json``.

    ``folders`` are where this job's format puts shard files (cleared too on ``overwrite``).
    """
    store = Store(out)
    try:
        store.makedirs(SHARDS_DIR)
        if overwrite:
            clear_out(out, folders)
        store.put_bytes(JOB_FILE, job_json.encode())
    except OSError as exc:
        raise SpecError(f"output folder {out} is not writable: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None


def clear_out(out: str, folders: Iterable[str] = ()) -> None:
    """Remove an old job's shards (every file its markers list, and any ``shard-*`` in ``folders``
    and in the folders any format would use for the old job's outputs), its views and its input
    list; the user's files stay."""
    store = Store(out)
    old = read_job(out) or {}
    outputs = old.get("spec", {}).get("outputs", []) if isinstance(old.get("spec"), dict) else []
    for m in markers.read_all(store):
        for rel in m.files:
            store.remove(rel)
    every = sinks.every()
    for folder in {SHARDS_DIR, *folders, *(f for s in every for f in s.folders(outputs))}:
        for name in store.listdir(folder):
            if name.startswith(markers.PREFIX) or name.endswith(".tmp"):
                store.remove(f"{folder}/{name}")
    for name in (*view_files(), INPUTS_FILE, SEGMENTS_FILE):
        store.remove(name)


def view_files() -> list[str]:
    """The views any format rebuilds in OUT (an old job's may differ from this one's)."""
    return sorted({f for s in sinks.every() for f in s.view_files})


def remove_stale_temps(out: str, folders: Iterable[str] = ()) -> None:
    """Temporary files left by a killed run: never part of any committed shard or the view.

    (An object store has none: files are built outside it and uploaded whole.)
    """
    if Store(out).remote:
        return
    for sub in {SHARDS_DIR, *folders}:
        folder = os.path.join(out, sub)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(folder):
                if name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))
    for name in os.listdir(out):  # only our own names: OUT may hold the user's files too
        if name.endswith(".tmp") and name.startswith(
                (*view_files(), INPUTS_FILE, JOB_FILE, SEGMENTS_FILE)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(out, name))


@contextlib.contextmanager
def lock_out(out: str) -> Iterator[dict[str, Any]]:
    """Hold OUT for this run (see module docstring); ``SpecError`` naming the holder if held.

    Creates OUT if needed (and removes it again if the run leaves nothing else in it). Yields
    what was written into the lock file.
    """
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if Store(out).remote:  # an object store has no locks: see the module docstring
        yield me
        return
    created = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
        fd = os.open(os.path.join(out, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise SpecError(f"output folder {out} is not writable") from None
    except OSError as exc:
        raise SpecError(f"output folder {out} is not writable: {exc.strerror}") from None
    try:
        if _take(fd, out):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        yield me
    finally:
        os.close(fd)  # the lock goes with the descriptor
        if created:
            with contextlib.suppress(OSError):  # a run refused early leaves no empty folder
                if os.listdir(out) == [LOCK_FILE]:
                    os.unlink(os.path.join(out, LOCK_FILE))
                    os.rmdir(out)


def _take(fd: int, out: str) -> bool:
    """True once locked; False where the filesystem has no locks; SpecError if held."""
    for attempt in range(5):  # a ``holder`` probe holds a shared lock for a moment
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.05 * attempt)
        except OSError as exc:
            if exc.errno not in NO_LOCKS:
                raise
            log.warning("output folder %s: its filesystem does not support locks (%s); nothing "
                        "stops a second run on it", out, exc.strerror)
            return False
    info = _read_lock(fd)
    raise SpecError(f"output folder {out} is in use by another gristmill run (host "
                    f"{info.get('host', '?')}, pid {info.get('pid', '?')}, started "
                    f"{info.get('started', '?')}); wait for it to end or stop it")


def holder(out: str) -> dict[str, Any] | None:
    """What the live driver holding OUT wrote in its lock file; None when no live run holds it."""
    try:
        fd = os.open(os.path.join(out, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_lock(fd)
        except OSError:
            return None  # no locks on this filesystem: nothing can tell
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_lock(fd: int) -> dict[str, Any]:
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
