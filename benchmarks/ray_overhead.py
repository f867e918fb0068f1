"""Ray engine overhead: the same job on the local engine and on a 2-node Ray cluster, one machine.

Each run is a fresh ``gristmill run`` command, as a user would type it (interpreter start, imports
and the engine's worker start-up included), the two engines alternating, each engine's median
counting. Both use two workers of one thread and one loader each (the Ray one: one actor per
node), the bundled EfficientNet-Lite0 and the same real photos; the Ray runs join a real 2-node
cluster started once for the benchmark (``--ray-address``). On one machine Ray cannot be faster:
the ratio shows what the engine costs (actor start, remote calls, receipts). Usage::

    PYTHONPATH=src python benchmarks/ray_overhead.py --size small   # 210 photos, one run each
    PYTHONPATH=src python benchmarks/ray_overhead.py --size full    # 1680 photos, three each
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "ray")]

SIZES = {"small": (15, 1), "full": (30, 3)}  # photo folders (14 photos each), runs per engine
PARTS = {"small": 1, "full": 4}  # copies of the tree: a longer run spreads the start-up of both
OPTIONS = ["--batch-size", "16", "--shard-size", "64", "--device", "cpu", "--threads", "1",
           "--loaders", "1", "--workers", "2", "--no-progress", "--overwrite"]


def seconds(tree: str, out: str, *engine: str) -> float:
    """Wall time of one ``gristmill run`` command over ``tree``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gristmill", "run", tree, "-o", out, *OPTIONS,
                           *engine], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"gristmill run {' '.join(engine)} failed: {done.stderr[-2000:]}")
    return elapsed


def main(size: str = "small") -> dict[str, float]:
    """Run both engines on ``size`` photos; print and return both rates and their ratio."""
    from cluster import local_cluster
    from photos import make_tree

    folders, repeats = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="gm-bench-") as tmp:
        tree = os.path.join(tmp, "photos")
        count = sum(len(make_tree(Path(tree) / f"part{i}", folders=folders))
                    for i in range(PARTS[size]))
        with local_cluster(2) as cluster:
            ray_engine = ["--engine", "ray", "--ray-address", cluster.cluster.address]
            runs: dict[str, list[float]] = {"local": [], "ray": []}
            for i in range(repeats):
                runs["local"].append(seconds(tree, os.path.join(tmp, f"local{i}")))
                runs["ray"].append(seconds(tree, os.path.join(tmp, f"ray{i}"), *ray_engine))
    local, ray = (count / statistics.median(runs[k]) for k in ("local", "ray"))
    result = {"items": count, "local": local, "ray": ray, "ratio": ray / local}
    print(f"{count} photos, 2 workers x 1 thread, fresh `gristmill run` each, median of "
          f"{repeats}: local {local:.1f} img/s, ray (2 nodes) {ray:.1f} img/s, ray/local "
          f"{ray / local:.3f} (overhead {100 * (1 - ray / local):.1f}%); seconds: "
          + ", ".join(f"{k} {' '.join(f'{v:.1f}' for v in vs)}" for k, vs in runs.items()))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    logging.basicConfig(level=logging.WARNING)
    main(parser.parse_args().size)
