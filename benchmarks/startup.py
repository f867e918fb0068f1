"""Start-up: a whole small ``gristmill run`` against a bare ``python -c "import torch"``.

Both are whole commands as a user types them (interpreter start included), run alternately,
``runs`` times each after one untimed run of each (the page cache warm), the median of each
counting. The job is 32 photos through the bundled model with its defaults, so the time is almost
all start-up: imports, the model's build and probe, the shared-weights file, calibration, the fork
server and its workers, the first batch. The ratio (run ÷ import) says what start-up costs beyond
torch itself, whatever the machine's speed. On a machine shared with other jobs the wall ratio
grows (gristmill's processes hand work to each other, each waiting its turn on the cores), so the
CPU seconds of each command's whole process tree are printed too. Usage::

    PYTHONPATH=src python -m benchmarks.startup [--runs 9] [--photos 32]  # or benchmarks/startup.py
    python -m benchmarks --only startup   # the same, as a part of the whole benchmark
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"small": 2, "medium": 5, "full": 9}  # timed runs of each command


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def seconds(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of its whole process tree) of one command, which must succeed.

    The CPU figure counts every process the command started that was waited for (all of
    gristmill's are); on a machine shared with other jobs it moves far less than the wall time.
    """
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return elapsed, _children_cpu() - cpu


def main(runs: int = 5, photos: int = 32) -> dict[str, float]:
    """Time both commands ``runs`` times each, alternating; print and return the medians."""
    sys.path.insert(0, str(ROOT))  # run as a script too
    from benchmarks.data import make_jpegs

    folder = ROOT / ".bench" / f"startup-{photos}"
    make_jpegs(folder, photos, (640, 480))
    with tempfile.TemporaryDirectory(prefix="gm-startup-") as tmp:
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "gristmill run": [sys.executable, "-m", "gristmill", "run", str(folder), "-o",
                              os.path.join(tmp, "out"), "--overwrite"],
        }
        for command in commands.values():  # untimed: page cache, .pyc files, the weights cache
            seconds(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(runs):
            # alternate which goes first, so a slow spell of the machine hits both alike
            for name in (commands if i % 2 == 0 else reversed(commands)):
                wall, cpu = seconds(commands[name])
                times[name].append(wall)
                cpus[name].append(cpu)
    torch_s = statistics.median(times["import torch"])
    run_s = statistics.median(times["gristmill run"])
    ratios = [r / t for r, t in zip(times["gristmill run"], times["import torch"], strict=True)]
    cpu_ratio = statistics.median(cpus["gristmill run"]) / statistics.median(cpus["import torch"])
    for name, values in times.items():
        print(f"  {name:14s} median {statistics.median(values):.2f} s  "
              f"({', '.join(f'{v:.2f}' for v in values)}); "
              f"CPU {statistics.median(cpus[name]):.2f} s", flush=True)
    print(f"  gristmill run ÷ import torch: {run_s / torch_s:.2f}× (medians; per pair "
          f"{min(ratios):.2f}–{max(ratios):.2f}×; CPU {cpu_ratio:.2f}×), {photos} photos, "
          f"{runs} runs each", flush=True)
    return {"torch": torch_s, "run": run_s, "ratio": run_s / torch_s,
            "worst_pair": max(ratios), "cpu_ratio": cpu_ratio, "photos": photos, "runs": runs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--runs", type=int, default=SIZES["full"], help="timed runs of each")
    parser.add_argument("--photos", type=int, default=32)
    args = parser.parse_args()
    main(args.runs, args.photos)
