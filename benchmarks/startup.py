"""Start-up: a whole small ``gristmill run`` against a bare ``python -c "import torch"``.

Both are whole commands as a user types them (interpreter start included), run alternately,
``runs`` times each after one untimed run of each (the page cache warm), the median of each
counting. The job is 32 photos through the bundled model with its defaults, so the time is almost
all start-up: imports, the model's description and shared-weights file, the fork server and its
workers, the first batch. ``gristmill run`` is timed twice: as every run after a model's first
(what the driver learned about the model is kept, ``models/memo.py``, so it imports no framework)
and as a model's first run (an empty folder of kept models each time). The ratio (run ÷ import)
says what start-up costs beyond torch itself, whatever the machine's speed. On a machine shared
with other jobs the wall ratio grows (gristmill's processes hand work to each other, each waiting
its turn on the cores), so the CPU seconds of each command's whole process tree are printed too.
Usage::

    PYTHONPATH=src python -m benchmarks.startup [--runs 9] [--photos 32]  # or benchmarks/startup.py
    python -m benchmarks --only startup   # the same, as a part of the whole benchmark
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"small": 2, "medium": 5, "full": 9}  # timed runs of each command
RUN = "gristmill run"
FIRST = "gristmill run, 1st"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Make this process the reaper of every descendant whose parent exits first (Linux): a
    process nobody waits for is missing from ``RUSAGE_CHILDREN`` (gristmill's fork server outlives
    the command by a moment and leaves unwaited, as the command does not wait for it)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap() -> None:
    """Wait for the command's orphaned descendants, so that their CPU time is counted."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def seconds(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of its whole process tree) of one command, which must succeed.

    The wall time ends when the command has exited and its output is closed; the CPU figure
    counts every process it started, including those that end after it (``_adopt_orphans``).
    On a machine shared with other jobs it moves far less than the wall time.
    """
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=_env() | (env or {}), capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - start
    _reap()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return elapsed, _children_cpu() - cpu


def main(runs: int = 5, photos: int = 32) -> dict[str, float]:
    """Time both commands ``runs`` times each, alternating; print and return the medians."""
    sys.path.insert(0, str(ROOT))  # run as a script too
    _adopt_orphans()
    from benchmarks.data import make_jpegs

    folder = ROOT / ".bench" / f"startup-{photos}"
    make_jpegs(folder, photos, (640, 480))
    with tempfile.TemporaryDirectory(prefix="gm-startup-") as tmp:
        run = [sys.executable, "-m", "gristmill", "run", str(folder), "-o",
               os.path.join(tmp, "out"), "--overwrite"]
        kept = {"GRISTMILL_CACHE": os.path.join(tmp, "kept")}
        commands: dict[str, tuple[list[str], Callable[[int], dict[str, str]]]] = {
            "import torch": ([sys.executable, "-c", "import torch"], lambda i: {}),
            # what a user's runs after a model's first see (models.memo: the driver imports
            # no framework); and a model's first run, with nothing kept
            RUN: (run, lambda i: kept),
            FIRST: (run, lambda i: {"GRISTMILL_CACHE": os.path.join(tmp, f"fresh-{i}")}),
        }
        for command, env in commands.values():  # untimed: page cache, .pyc files, kept model
            seconds(command, env(-1))
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(runs):
            # alternate the order, so a slow spell of the machine hits all alike
            for name in (list(commands) if i % 2 == 0 else list(reversed(commands))):
                command, env = commands[name]
                wall, cpu = seconds(command, env(i))
                times[name].append(wall)
                cpus[name].append(cpu)
    torch_s = statistics.median(times["import torch"])
    figures: dict[str, float] = {"torch": torch_s, "photos": photos, "runs": runs}
    for name, values in times.items():
        print(f"  {name:22s} median {statistics.median(values):.2f} s  "
              f"({', '.join(f'{v:.2f}' for v in values)}); "
              f"CPU {statistics.median(cpus[name]):.2f} s", flush=True)
    for name, key in ((RUN, ""), (FIRST, "first_")):
        run_s = statistics.median(times[name])
        ratios = [r / t for r, t in zip(times[name], times["import torch"], strict=True)]
        cpu_ratio = statistics.median(cpus[name]) / statistics.median(cpus["import torch"])
        print(f"  {name} ÷ import torch: {run_s / torch_s:.2f}× (medians; per pair "
              f"{min(ratios):.2f}–{max(ratios):.2f}×; CPU {cpu_ratio:.2f}×), {photos} photos, "
              f"{runs} runs each", flush=True)
        figures |= {f"{key}run": run_s, f"{key}ratio": run_s / torch_s,
                    f"{key}worst_pair": max(ratios), f"{key}cpu_ratio": cpu_ratio}
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--runs", type=int, default=SIZES["full"], help="timed runs of each")
    parser.add_argument("--photos", type=int, default=32)
    args = parser.parse_args()
    main(args.runs, args.photos)
