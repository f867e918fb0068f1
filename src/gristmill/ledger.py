"""The ledger: what is in OUT, what is committed, and the commit protocol.

Layout of OUT::

    job.json              the resolved job spec (a rerun with another identity is refused)
    inputs.npz            the frozen input list of the job (resume never walks the source again)
    shards/shard-N.h5     one shard's names, outputs and errors
    shards/shard-N.json   its marker, written last: counts, input hash, spec hash
    features.h5           the one file users open: a view over all committed shards
    lock                  held (flock) by the one driver running the job: {"host", "pid", "started"}

Commit protocol (runs in the worker that computed the shard): write the shard to a temporary name,
fsync, rename to its final name, fsync the folder, then write the marker the same way. A shard
exists for every reader only once its marker does, so a crash at any point leaves either nothing or
a whole shard; a shard computed twice (a retry after a kill) is committed once, because a second
attempt that finds the marker discards its file. Resume reads the markers only: its cost grows with
the number of shards, not of items.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import SpecError
from .plan import Shard

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
INPUTS_FILE = "inputs.npz"
SHARDS_DIR = "shards"
VIEW_FILE = "features.h5"
LOCK_FILE = "lock"


def shard_path(out: str, shard: Shard) -> str:
    return os.path.join(out, SHARDS_DIR, shard.name + ".h5")


def marker_path(out: str, shard: Shard) -> str:
    return os.path.join(out, SHARDS_DIR, shard.name + ".json")


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


def commit_shard(out: str, shard: Shard, write: Callable[[str], None],
                 marker: dict[str, Any]) -> bool:
    """Write a shard with ``write(tmp_path)`` and commit it; False if it was already committed."""
    final, mark = shard_path(out, shard), marker_path(out, shard)
    if os.path.exists(mark):
        return False
    tmp = temp_name(final)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if os.path.exists(mark):
            return False
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(final))
    write_atomic(mark, json.dumps(marker, sort_keys=True).encode())
    return True


def read_marker(out: str, shard: Shard) -> dict[str, Any] | None:
    try:
        with open(marker_path(out, shard), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def committed(out: str, shards: Iterable[Shard], digest: Callable[[Shard], str],
              spec_hash: str) -> dict[int, dict[str, Any]]:
    """Markers of the shards already committed for this job, by shard id.

    A marker whose input hash or spec hash disagrees with the plan is ignored (and its shard
    recomputed): it belongs to a different job that the job-identity check did not catch.
    """
    folder = os.path.join(out, SHARDS_DIR)
    try:
        present = {name for name in os.listdir(folder) if name.endswith(".json")}
    except FileNotFoundError:
        return {}
    found = {}
    for shard in shards:
        if shard.name + ".json" not in present:
            continue
        marker = read_marker(out, shard)
        if marker is None or not os.path.exists(shard_path(out, shard)):
            continue
        if marker.get("inputs") != digest(shard) or marker.get("spec") != spec_hash:
            log.warning("%s: marker does not match this job; recomputing it", shard.name)
            continue
        found[shard.id] = marker
    return found


def check_out(out: str, identity: dict[str, Any], overwrite: bool) -> bool:
    """Can this job use OUT? True when OUT already holds this very job (a resume).

    Changes nothing. Refuses (SpecError) an OUT that holds another job unless ``overwrite``, and
    an OUT that cannot be created or written.
    """
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing):
        raise SpecError(f"output folder {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"output folder {out} is not writable")
    job_file = os.path.join(out, JOB_FILE)
    if os.path.exists(job_file):
        try:
            with open(job_file) as f:
                same = json.load(f).get("identity") == identity
        except (OSError, ValueError, AttributeError):
            same = False
        if not same and not overwrite:
            raise SpecError(
                f"output folder {out} holds a different job (see {job_file}); "
                "use --overwrite to replace it or choose another -o folder")
        return same and not overwrite
    shards = os.path.join(out, SHARDS_DIR)
    if os.path.isdir(shards) and os.listdir(shards) and not overwrite:
        raise SpecError(f"output folder {out} has shards but no {JOB_FILE}; "
                        "use --overwrite or another -o folder")
    return False


def init_out(out: str, job_json: str, *, overwrite: bool) -> None:
    """Create OUT's folders, remove an old job's files if ``overwrite``, write ``job.json``."""
    try:
        os.makedirs(os.path.join(out, SHARDS_DIR), exist_ok=True)
        if overwrite:
            clear_out(out)
        write_atomic(os.path.join(out, JOB_FILE), job_json.encode())
    except OSError as exc:
        raise SpecError(f"output folder {out} is not writable: {exc.strerror}") from None


def clear_out(out: str) -> None:
    folder = os.path.join(out, SHARDS_DIR)
    for name in os.listdir(folder):
        if name.startswith("shard-") or name.endswith(".tmp"):
            os.unlink(os.path.join(folder, name))
    for name in (VIEW_FILE, INPUTS_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))


def remove_stale_temps(out: str) -> None:
    """Temporary files left by a killed run: never part of any committed shard or the view."""
    folder = os.path.join(out, SHARDS_DIR)
    for name in os.listdir(folder):
        if name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
    for name in os.listdir(out):  # only our own names: OUT may hold the user's files too
        if name.endswith(".tmp") and name.startswith((VIEW_FILE, INPUTS_FILE, JOB_FILE)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(out, name))


@contextlib.contextmanager
def lock_out(out: str) -> Iterator[dict[str, Any]]:
    """Hold OUT for this driver: an exclusive ``flock`` on ``OUT/lock``, which names the holder.

    The kernel drops the lock when the process dies, however it dies, so a crashed driver never
    leaves OUT locked. Raises ``SpecError`` naming the holder when another live driver has it.
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_lock(fd) or {}
            raise SpecError(f"output folder {out} is in use by another gristmill run (pid "
                            f"{who.get('pid', '?')} on {who.get('host', '?')}); wait for it or "
                            "stop it first") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:  # a full disk: the lock holds all the same, only unnamed
            log.warning("cannot write %s: %s", path, exc.strerror or exc)
        yield info
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holder(out: str) -> dict[str, Any] | None:
    """The ``{"host", "pid", "started"}`` of the live driver holding OUT, or None."""
    try:
        fd = os.open(os.path.join(out, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:  # a shared lock is granted only when no driver holds the exclusive one
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_lock(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_lock(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
