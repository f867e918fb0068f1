"""Chaos rounds: a real ``gristmill run`` whose process tree is shot at from start-up to the end.

Shared by ``test_chaos.py`` and ``scripts/chaos.py``. A round starts the CLI, and at random times
within the undisturbed run's duration (up to ``LAST`` of it: a round with faults is slower than
the undisturbed run, seldom faster, so the last kills still land) SIGKILLs one random
descendant of the driver (the kind is
drawn first, so the one fork server and the one resource tracker are hit as often as the many
loaders), and optionally SIGSTOPs a worker for a while (the stall path) before SIGCONT. It then
checks what a user would: the exit code, the rows, stderr, the processes and ``/dev/shm``.

The checks look at the round's own job only, so rounds run beside other jobs (another test, another
user) neither fail for those jobs' processes or names nor hide their own: the job runs with an
environment tag that every process of it inherits (``faultkit.tagged``: a worker orphaned by its
fork server's death counts, a process that later reuses one of the job's pids does not), and its
``/dev/shm`` names all start with ``gristmill-<driver pid>-``. A victim is signalled through a
pidfd opened while it is still a descendant of the driver, never by a pid that may have been
reused by then.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from faultkit import _cmdline, _ppid, descendants, start, tagged, wait_for

LAST = 0.9  # the latest kill, as a fraction of the undisturbed run's duration
KINDS = ("fork server", "resource tracker", "shm cleaner", "worker", "loader")


def kind_of(pid: int, driver: int) -> str:
    """What a descendant of ``driver`` is, from its command line and parent."""
    cmd, parent = _cmdline(pid), _ppid(pid)
    if b"resource_tracker" in cmd:
        return "resource tracker"
    if b"sys.stdin.buffer.read" in cmd:
        return "shm cleaner"
    if parent == driver:  # a worker forked from the server has the server's command line
        return "fork server" if b"forkserver" in cmd else "worker"
    if _ppid(parent) == driver and b"forkserver" in _cmdline(parent):
        return "worker"
    return "loader"


def tree(driver: int) -> dict[str, list[int]]:
    kinds: dict[str, list[int]] = {k: [] for k in KINDS}
    for pid in descendants(driver):
        kinds[kind_of(pid, driver)].append(pid)
    return kinds


def features(out: Path) -> dict[str, np.ndarray]:
    with h5py.File(out / "features.h5", "r") as f:
        names = [n.decode() for n in f["names"][()]]
        assert len(names) == len(set(names)), "an input appears twice"
        return dict(zip(names, f["output"][()], strict=True))


def max_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    assert sorted(got) == sorted(want), "not the same inputs"
    return max(float(np.abs(got[k] - want[k]).max()) for k in want)


def other_jobs_name(entry: str, driver: int) -> bool:
    """Whether ``/dev/shm`` ``entry`` was named by a gristmill driver other than ``driver``."""
    found = re.match(r"(?:sem\.)?gristmill-(\d+)-", entry)
    return found is not None and int(found.group(1)) != driver


def shm_entries(pid: int) -> set[str]:
    """``/dev/shm`` entries named by driver ``pid``: rings and the semaphores named after them."""
    prefix = f"gristmill-{pid}-"
    return {n for n in os.listdir("/dev/shm") if n.startswith((prefix, "sem." + prefix))}


@dataclass
class Round:
    driver: int = 0
    returncode: int = -1
    seconds: float = 0.0
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    stops: list[tuple[float, int, float]] = field(default_factory=list)
    stderr: str = ""
    stdout: str = ""
    left_alive: list[int] = field(default_factory=list)
    left_shm: set[str] = field(default_factory=set)
    held_pipes: bool = False  # the driver exited but a process of the job kept stderr open
    orphans: dict[int, str] = field(default_factory=dict)  # outlived their parent while it ran

    def problems(self) -> list[str]:
        out = []
        if self.returncode != 0:
            out.append(f"exit code {self.returncode}")
        if "Traceback" in self.stderr + self.stdout:
            out.append("a traceback in the output")
        foreign = [line for line in self.stderr.splitlines()
                   if not line.startswith(("gristmill: ", "  "))]
        if foreign:
            out.append(f"stderr lines not gristmill's: {foreign[:3]}")
        if self.held_pipes:
            out.append("the job's output stayed open after the driver exited")
        if self.orphans:
            out.append(f"processes of the job outlived their parent: {self.orphans}")
        if self.left_alive:
            out.append(f"processes alive after: {self.left_alive}")
        if self.left_shm:
            out.append(f"/dev/shm entries left: {sorted(self.left_shm)}")
        return out


def chaos_round(args: list[str], *, duration: float, kills: int, stops: int,
                rng: random.Random, stall_timeout: float = 3.0) -> Round:
    """Run ``gristmill run ARGS`` with ``kills`` SIGKILLs and ``stops`` SIGSTOP/SIGCONTs."""
    result = Round()
    end = LAST * duration
    events = sorted([(rng.uniform(0.1, end), "kill") for _ in range(kills)]
                    + [(rng.uniform(0.3, end), "stop") for _ in range(stops)])
    started = time.monotonic()
    tag = uuid.uuid4().hex
    job = start(*args, extra_env={"GRISTMILL_TEST_JOB": tag})
    orphans = _Orphans(tag, job.pid)
    try:
        for at, what in events:
            while time.monotonic() - started < at and job.poll() is None:
                orphans.look()
                time.sleep(0.02)
            if job.poll() is not None:
                break
            if what == "kill":
                landed = _kill_one(job, rng)
                if landed is not None:
                    result.kills.append((round(time.monotonic() - started, 2), *landed))
                continue
            kinds = tree(job.pid)
            if kinds.get("worker"):
                victim = rng.choice(kinds["worker"])
                pause = rng.uniform(0.5, stall_timeout + 2.0)
                if _signal(victim, signal.SIGSTOP, job.pid):
                    time.sleep(pause)
                    _signal(victim, signal.SIGCONT, job.pid)
                    result.stops.append((round(time.monotonic() - started, 2), victim, pause))
        deadline = time.monotonic() + 600
        while job.poll() is None and time.monotonic() < deadline:
            orphans.look()
            time.sleep(0.05)
        job.wait(timeout=1)
        result.seconds = time.monotonic() - started
        try:  # EOF once every process of the job has closed the pipes: 30 s is plenty
            result.stdout, result.stderr = job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            result.held_pipes = True
    finally:
        if job.poll() is None:
            job.kill()
        wait_for(lambda: not tagged(tag), timeout=10)
        result.left_alive = tagged(tag)
        for pid in result.left_alive:  # the next round starts clean whatever this one left
            _signal(pid, signal.SIGKILL, tag=tag)
        if job.stdout is not None and not job.stdout.closed:
            out, err = job.communicate()
            result.stdout, result.stderr = result.stdout + out, result.stderr + err
    result.driver, result.returncode = job.pid, job.returncode
    result.orphans = orphans.found
    wait_for(lambda: not shm_entries(job.pid), timeout=5)
    result.left_shm = shm_entries(job.pid)
    return result


class _Orphans:
    """Processes of the job (by tag) that outlive their parent while the driver runs: each is to
    die with it (``PR_SET_PDEATHSIG``); one that still runs ``GRACE`` seconds after it was first
    seen orphaned (a SIGKILLed process may take a moment to go) is recorded."""

    GRACE = 1.0
    EVERY = 0.25

    def __init__(self, tag: str, driver: int) -> None:
        self.tag, self.driver = tag, driver
        self.first: dict[int, float] = {}
        self.found: dict[int, str] = {}
        self.last = 0.0

    def look(self) -> None:
        now = time.monotonic()
        if now - self.last < self.EVERY:
            return
        self.last = now
        job = set(tagged(self.tag))
        orphaned = [p for p in job - {self.driver} if _ppid(p) not in job]
        self.first = {p: self.first.get(p, now) for p in orphaned}
        for pid in orphaned:
            if now - self.first[pid] >= self.GRACE:
                self.found[pid] = kind_of(pid, self.driver) + " " + _cmdline(pid)[:80].decode(
                    errors="replace").replace("\0", " ")


def undisturbed(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    job = start(*args)
    stdout, stderr = job.communicate(timeout=600)
    done = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    return time.monotonic() - started, done


def _kill_one(job: subprocess.Popen, rng: random.Random) -> tuple[str, int] | None:
    """SIGKILL one random descendant of ``job``'s driver; (kind, pid), or None if the job ended
    first. A victim that is gone by the time it is signalled (a process that was exiting, the
    children of a server killed a moment before) does not count: another is drawn."""
    while job.poll() is None:
        kinds = {k: v for k, v in tree(job.pid).items() if v}
        if kinds:
            kind = rng.choice(sorted(kinds))
            victim = rng.choice(kinds[kind])
            if _signal(victim, signal.SIGKILL, job.pid):
                return kind, victim
        time.sleep(0.02)
    return None


def _signal(pid: int, sig: int, driver: int | None = None, tag: str = "") -> bool:
    """Send ``sig`` to ``pid`` if it is still a descendant of ``driver`` (or, without one, still
    a process of the job ``tag``); True if sent."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:  # the pidfd pins the process: checked now, it is the one signalled
        if pid not in (descendants(driver) if driver is not None else tagged(tag)):
            return False
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)
            return True
        return False
    finally:
        os.close(fd)
