"""Shared tools for fault-injection tests: tiny images, the CLI as a subprocess, process and
shared-memory inspection through /proc and /dev/shm (no psutil)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
TINY = ["--model", "tinynet:make", "--resize", "32x32", "--device", "cpu", "--no-progress"]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), str(HERE.parent)])  # tinynet, photos
    e.pop("PYTHONWARNINGS", None)
    e.update(extra)
    return e


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gristmill", "run", *args]


def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``gristmill run ARGS`` to completion; stdout/stderr captured as text."""
    return subprocess.run(cli(*args), env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def start(*args: str, extra_env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start ``gristmill run ARGS``, with Ctrl-C as a terminal delivers it: a test suite run
    with SIGINT ignored (a background job of a script) would otherwise pass that on."""
    kw.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(cli(*args), env=env(**(extra_env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


TAG = "GRISTMILL_TEST_JOB"  # an environment variable no gristmill code reads


def tagged(tag: str) -> list[int]:
    """Live processes whose environment holds ``GRISTMILL_TEST_JOB=tag``: every process of a job
    started with that tag (children inherit it), including one its parent's death reparented,
    and never an unrelated process that reused a pid of the job."""
    needle = b"\0" + f"{TAG}={tag}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in b"\0" + environ + b"\0":
            found.append(int(entry))
    return found


def make_images(root: Path, n: int, *, size: int = 64, per_folder: int = 200) -> list[str]:
    """``n`` distinct small JPEGs (crops of real photos) in folders of ``per_folder``."""
    from photos import sample_photos

    photos = list(sample_photos().values())
    names = []
    for i in range(n):
        image = photos[i % len(photos)]
        h, w = image.shape[:2]
        k = i // len(photos)
        y, x = (k * 7) % (h - size), (k * 13) % (w - size)
        folder = root / f"f{i // per_folder:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(image[y:y + size, x:x + size])).save(path,
                                                                                    quality=85)
        names.append(os.path.relpath(path, root))
    return sorted(names)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/*/stat parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def workers_and_loaders(driver: int) -> tuple[list[int], list[int]]:
    """The driver's worker processes (children of its fork server) and their loaders (children
    of the workers: forked at first, spawned after a restart); the resource tracker and the fork
    server itself are neither."""
    servers = [p for p in children(driver) if b"forkserver" in _cmdline(p)]
    workers = [p for s in servers for p in children(s)]
    loaders = [q for p in workers for q in children(p) if b"resource_tracker" not in _cmdline(q)]
    return workers, loaders


def children(pid: int) -> list[int]:
    return [p for p in descendants(pid) if _ppid(p) == pid]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2:].split()[1])


def shm_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("gristmill-")}


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_file_override() -> None:
    """preexec_fn: root without the power to ignore file permissions (python lives under /root,
    so setuid(nobody) could not even start the interpreter). Not root: nothing to drop."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
