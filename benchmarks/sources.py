"""``python -m benchmarks.sources [--part plan,decode,ray] [--size small|full]``: reading data where
it lives.

- plan: list and plan 1,000,000 samples in 1,000 webdataset tars, and in 1,000 Parquet files, in a
  fresh process (what a driver does before any worker starts); prints seconds and max RSS.
  The tars hold one small member per sample (headers are what listing reads; the data size does not
  matter to it), the tables a key column and a small bytes column.
- decode: the same 1920x1080 JPEGs as loose files, as tars and as Parquet, each through the bundled
  model with the same whole ``gristmill run`` command, alternated, median of the rounds; prints
  each source's speed relative to loose files.
- ray: the tar and Parquet jobs against a Ray Data script (``benchmarks/ray_data_peer.py``), whole
  commands, same run; prints gristmill's ratio.

Files are made once under ``.bench/sources/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from .data import make_jpegs

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "sources"
SIZES = {"small": {"containers": 20, "per": 100, "images": 16, "rounds": 1},
         "full": {"containers": 1000, "per": 1000, "images": 96, "rounds": 3}}

_PLAN = """
import json, resource, sys, time
start = time.perf_counter()
from gristmill.sources import list_inputs
from gristmill.plan import plan
inputs = list_inputs([sys.argv[1]])
shards = plan(len(inputs), 1024, inputs.breaks())
inputs.save(sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start, "items": len(inputs),
                  "shards": len(shards),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")


def make_tars(folder: Path, count: int, per: int) -> str:
    """``count`` tars of ``per`` samples (one 64-byte ``.jpg`` member each), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "done"
    if not done.exists():
        data = b"\xff" * 64
        pad = b"\0" * (512 - len(data))
        for t in range(count):
            chunks = []
            for i in range(per):
                info = tarfile.TarInfo(f"s{t:05d}_{i:06d}.jpg")
                info.size = len(data)
                chunks += [info.tobuf(format=tarfile.USTAR_FORMAT), data, pad]
            (folder / f"{t:05d}.tar").write_bytes(b"".join(chunks) + b"\0" * 1024)
        done.touch()
    return str(folder / f"{{00000..{count - 1:05d}}}.tar")


def make_tables(folder: Path, count: int, per: int) -> str:
    """``count`` Parquet files of ``per`` rows (key + 64-byte ``jpg``), made once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "done"
    if not done.exists():
        blobs = pa.array([b"\xff" * 64] * per, pa.binary())
        for t in range(count):
            keys = pa.array([f"p{t:05d}_{i:06d}" for i in range(per)])
            pq.write_table(pa.table({"key": keys, "jpg": blobs}), folder / f"{t:05d}.parquet",
                           row_group_size=250)
        done.touch()
    return str(folder / "*.parquet")


def bench_plan(size: dict) -> list[str]:
    lines = []
    for kind, make in (("tars", make_tars), ("parquet", make_tables)):
        source = make(WORK / f"plan-{kind}-{size['containers']}", size["containers"],
                      size["per"])
        done = subprocess.run([sys.executable, "-c", _PLAN, source, str(WORK / "inputs.npz")],
                              env=_env(), capture_output=True, text=True, check=True)
        r = json.loads(done.stdout)
        lines.append(f"plan {r['items']:,} samples in {size['containers']:,} {kind}: "
                     f"{r['seconds']:.1f} s, {r['rss_mb']:.0f} MB max RSS, {r['shards']} shards "
                     "(target < 30 s, < 2 GB)")
    return lines


def make_decode_sources(n: int) -> dict[str, str]:
    """The same ``n`` 1920x1080 JPEGs as loose files, 4 tars and 2 Parquet tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = make_jpegs(WORK / f"loose-{n}", n, (1920, 1080))
    tars = WORK / f"tars-{n}"
    tables = WORK / f"tables-{n}"
    if not (tars / "done").exists():
        tars.mkdir(parents=True, exist_ok=True)
        tables.mkdir(parents=True, exist_ok=True)
        per = (n + 3) // 4
        for t in range(4):
            with tarfile.open(tars / f"{t:03d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
                for p in paths[t * per:(t + 1) * per]:
                    data = Path(p).read_bytes()
                    info = tarfile.TarInfo(Path(p).stem + ".jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        half = n // 2
        for t, part in enumerate((paths[:half], paths[half:])):
            pq.write_table(pa.table({"key": [Path(p).stem for p in part],
                                     "jpg": [Path(p).read_bytes() for p in part]}),
                           tables / f"{t}.parquet", row_group_size=16)
        (tars / "done").touch()
    return {"loose files": str(WORK / f"loose-{n}"), "tars": str(tars / "*.tar"),
            "parquet": str(tables / "*.parquet")}


def _gristmill(source: str, out: Path, extra: tuple[str, ...] = ()) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gristmill", "run", source, "-o", str(out),
                    "--outputs", "features", "--device", "cpu", "--overwrite", "--no-progress",
                    *extra], env=_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def bench_decode(size: dict) -> list[str]:
    sources = make_decode_sources(size["images"])
    times: dict[str, list[float]] = {k: [] for k in sources}
    for _ in range(size["rounds"]):
        for kind, source in sources.items():
            times[kind].append(_gristmill(source, WORK / "out-decode"))
    loose = statistics.median(times["loose files"])
    lines = []
    for kind, spent in times.items():
        t = statistics.median(spent)
        lines.append(f"decode-bound {size['images']} x 1920x1080 from {kind}: {t:.1f} s "
                     f"({size['images'] / t:.1f} img/s), {loose / t:.2f}x loose files "
                     f"(runs: {', '.join(f'{s:.1f}' for s in spent)})")
    return lines


def bench_ray(size: dict) -> list[str]:
    sources = make_decode_sources(size["images"])
    peer = ROOT / "benchmarks" / "ray_data_peer.py"
    lines = []
    for kind in ("tars", "parquet"):
        mine, theirs = [], []
        for _ in range(size["rounds"]):
            mine.append(_gristmill(sources[kind], WORK / "out-ray-gm"))
            start = time.perf_counter()
            subprocess.run([sys.executable, str(peer), kind, sources[kind],
                            str(WORK / "out-ray-peer")], env=_env(), check=True,
                           capture_output=True)
            theirs.append(time.perf_counter() - start)
        g, r = statistics.median(mine), statistics.median(theirs)
        lines.append(f"{kind}, {size['images']} x 1920x1080: gristmill {g:.1f} s, Ray Data "
                     f"{r:.1f} s: gristmill {r / g:.2f}x (target >= 2x)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--part", default="plan,decode")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    WORK.mkdir(parents=True, exist_ok=True)
    parts = {"plan": bench_plan, "decode": bench_decode, "ray": bench_ray}
    for part in args.part.split(","):
        for line in parts[part](size):
            print(line, flush=True)


if __name__ == "__main__":
    main()
