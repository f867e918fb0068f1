"""Chaos check: a 160-photo job shot at while it runs, compared with an undisturbed run.

    python scripts/chaos.py [--rounds 3] [--kills 6] [--stops 0]

Each round runs ``gristmill run`` (a tiny model, ``--shard-size 8``) and SIGKILLs ``--kills``
random descendants of its driver (fork server, resource tracker, shm cleaner, workers, loaders),
spread over the undisturbed run's duration (up to 90 % of it), from start-up to the end. A round
passes with every SIGKILL landed, exit 0, rows equal to the undisturbed run (<= 1e-6), no
traceback and only gristmill's own lines on stderr, no process of the job outliving its parent
while it runs nor alive afterwards (every process carrying the round's environment tag) and no
new entry in /dev/shm: the whole folder is compared, less the names of other gristmill runs
(``gristmill-<their driver pid>-...``) and entries another program made and removed again within
3 s. Exit status: 0 when every round passed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests"), str(ROOT / "src")]

from chaoskit import (  # noqa: E402
    chaos_round,
    features,
    max_difference,
    other_jobs_name,
    undisturbed,
)
from faultkit import TINY, make_images, wait_for  # noqa: E402

JOB = ["--shard-size", "8", "--batch-size", "4", "--workers", "2", "--threads", "1",
       "--loaders", "1", "--max-attempts", "6", "--stall-timeout", "5", *TINY,
       "--model", "tinynet:slow"]


def new_entries(before: set[str], driver: int) -> list[str]:
    """``/dev/shm`` entries made since ``before``, less those other gristmill runs named."""
    return sorted(n for n in set(os.listdir("/dev/shm")) - before
                  if not other_jobs_name(n, driver))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--stops", type=int, default=0, help="SIGSTOP/SIGCONT of a worker")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gristmill-chaos-") as tmp:
        images = Path(tmp) / "images"
        make_images(images, 160)
        seconds, done = undisturbed([str(images), "-o", str(Path(tmp) / "ref"), *JOB])
        if done.returncode != 0:
            print(f"undisturbed run failed ({done.returncode}):\n{done.stderr}")
            return 1
        want = features(Path(tmp) / "ref")
        print(f"undisturbed: {len(want)} rows in {seconds:.1f}s; options: {' '.join(JOB)}")
        failed = 0
        for k in range(args.rounds):
            before = set(os.listdir("/dev/shm"))
            out = Path(tmp) / f"out{k}"
            result = chaos_round([str(images), "-o", str(out), *JOB], duration=seconds,
                                 kills=args.kills, stops=args.stops, rng=rng)
            problems = result.problems()
            if len(result.kills) < args.kills:  # the job ended first: the round proves less
                problems.append(f"only {len(result.kills)} of {args.kills} SIGKILLs landed")
            wait_for(lambda: not new_entries(before, result.driver), timeout=3)  # noqa: B023
            new_shm = new_entries(before, result.driver)
            if new_shm:
                problems.append(f"new /dev/shm entries: {new_shm}")
            diff = float("nan")
            if result.returncode == 0:
                diff = max_difference(features(out), want)
                if not diff <= 1e-6:
                    problems.append(f"rows differ by {diff}")
            kills = ", ".join(f"{kind}@{t:.1f}s" for t, kind, _ in result.kills)
            replaced = next((line.strip() for line in result.stderr.splitlines()
                             if "faults survived" in line), "no fault reported")
            print(f"round {k + 1}: exit {result.returncode}, {result.seconds:.1f}s, "
                  f"{len(result.kills)} SIGKILLs ({kills}); max |diff| {diff:.1e}; {replaced}; "
                  + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
            if problems:
                failed += 1
                print(result.stderr)
        print(f"{args.rounds - failed} of {args.rounds} rounds passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
