"""Ray engine overhead: the same job on the local engine and on a 2-node Ray cluster, one machine.

Both runs use two workers of one thread and one loader each (the Ray one: one actor per node), the
bundled EfficientNet-Lite0, and the same real photos; the rate is items over the run's wall time,
worker start-up included; with repeats each engine's best run counts (the first run of this
process also pays the driver's imports). On one machine Ray cannot be faster: the ratio shows what
the engine costs (actor start, remote calls, receipts). Usage::

    PYTHONPATH=src python benchmarks/ray_overhead.py --size small   # 210 photos, one run each
    PYTHONPATH=src python benchmarks/ray_overhead.py --size full    # 1680 photos, best of two each
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "ray")]

SIZES = {"small": (15, 1), "full": (30, 2)}  # photo folders (14 photos each), best of repeats
PARTS = {"small": 1, "full": 4}  # copies of the tree: a longer run spreads the start-up of both
OPTIONS = {"batch_size": 16, "shard_size": 64, "device": "cpu", "threads": 1, "loaders": 1,
           "workers": 2, "progress": False, "overwrite": True}


def rate(tree: str, out: str, **options: object) -> float:
    import gristmill

    report = gristmill.run([tree], out, **(OPTIONS | options))
    assert report.complete
    return report.throughput


def main(size: str = "small") -> dict[str, float]:
    """Run both engines on ``size`` photos; print and return both rates and their ratio."""
    from cluster import local_cluster
    from photos import make_tree

    folders, repeats = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="gm-bench-") as tmp:
        tree = os.path.join(tmp, "photos")
        count = sum(len(make_tree(Path(tree) / f"part{i}", folders=folders))
                    for i in range(PARTS[size]))
        local = max(rate(tree, os.path.join(tmp, f"local{i}")) for i in range(repeats))
        with local_cluster(2):
            ray = max(rate(tree, os.path.join(tmp, f"ray{i}"), engine="ray")
                      for i in range(repeats))
    result = {"items": count, "local": local, "ray": ray, "ratio": ray / local}
    print(f"{count} photos, 2 workers x 1 thread: local {local:.1f} img/s, "
          f"ray (2 nodes) {ray:.1f} img/s, ray/local {ray / local:.3f} "
          f"(overhead {100 * (1 - ray / local):.1f}%)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    logging.basicConfig(level=logging.WARNING)
    main(parser.parse_args().size)
