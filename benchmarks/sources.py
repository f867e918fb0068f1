"""``python -m benchmarks.sources [--part plan,decode,ray,billions] [--size small|full]``: reading
data where it lives.

- plan: list and plan 1,000,000 samples in 1,000 webdataset tars, and in 1,000 Parquet files, in a
  fresh process (what a driver does before any worker starts); prints seconds and max RSS (the
  items of tars are estimated from their sizes: only the first tar's headers are read).
  The tars hold one small member per sample, the tables a key column and a small bytes column.
- decode: the same 1920x1080 JPEGs as loose files, as tars and as Parquet, each through the bundled
  model with the same whole ``gristmill run`` command, alternated, median of the rounds; prints
  each source's speed relative to loose files.
- ray: the tar and Parquet jobs against a Ray Data script (``benchmarks/ray_data_peer.py``), whole
  commands, same run; prints gristmill's ratio.
- billions: the driver's work, measured from outside with whole commands, so the same command
  measures any planner (each in a fresh process; seconds, max RSS of the command's processes):
  1. ``gristmill plan`` over 100,000 one-sample tars (``--size small``: 2,000), given as a brace
     range and as a folder (target < 60 s, < 1 GB);
  2. ``gristmill plan`` over 100 tars of 5,000 samples against 100 tars of 5 (small: 20 each),
     median of the rounds, and their ratio (target <= 1.5x);
  3. ``gristmill plan s3://.../{00..39}.tar`` against an S3 server on 127.0.0.1 (moto, in this
     process, behind a WSGI middleware that logs every request): how many distinct tar objects
     received a GET, ranged or not (target <= 2 of 40), and the requests by kind;
  4. ``gristmill.run`` on a 2-node local Ray cluster over 10,000 one-sample tars with
     ``shard_size=1`` (small: 500) and a numpy-only model, in a driver subprocess: the driver's own
     CPU time (``getrusage(RUSAGE_SELF)``: user + system, Ray's threads in it included) and wall
     time per shard, and per shard beyond a 20-shard run of the same job (the fixed start-up
     taken out).
  Every sample is the same 16x16 JPEG (decodable: the plan's calibration reads a few).
  ``--tars``, ``--pairs``, ``--s3-tars`` and ``--ray-shards`` override the size's counts (0 skips
  that case).

Files are made once under ``.bench/sources/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .data import make_jpegs

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "sources"
SIZES = {"small": {"containers": 20, "per": 100, "images": 16, "rounds": 1, "tars": 2000,
                   "pairs": 20, "s3_tars": 40, "ray_shards": 500},
         "full": {"containers": 1000, "per": 1000, "images": 96, "rounds": 3, "tars": 100_000,
                  "pairs": 100, "s3_tars": 40, "ray_shards": 10_000}}

_PLAN = """
import json, resource, sys, time
start = time.perf_counter()
from gristmill.sources import list_inputs
from gristmill.plan import plan_segments
inputs = list_inputs([sys.argv[1]])
shards = plan_segments([(0, "list")], len(inputs), 1024, inputs.breaks(), inputs.weight)
inputs.save(sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "items": int(inputs.weights().sum()), "shards": len(shards),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# One command in a fresh process: its wall time, and the peak RSS and CPU time of the command's
# processes (RUSAGE_CHILDREN of this otherwise idle process: the largest one's RSS, all their CPU).
_COMMAND = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": done.returncode, "seconds": seconds, "rss_mb": use.ru_maxrss / 1024,
                  "cpu": use.ru_utime + use.ru_stime, "stdout": done.stdout,
                  "stderr": done.stderr[-3000:]}))
"""

# A Ray job's driver, in its own process: its own CPU time (all its threads, Ray's included).
_RAY_DRIVER = """
import json, resource, sys, time
start = time.perf_counter()
import gristmill
source, out, address, model = sys.argv[1:5]
report = gristmill.run([source], out, model=model, engine="ray", ray_address=address,
                       shard_size=1, batch_size=8, device="cpu", workers=2, threads=1,
                       loaders=1, progress=False, overwrite=True)
seconds = time.perf_counter() - start
me = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "cpu": me.ru_utime + me.ru_stime,
                  "children_cpu": children.ru_utime + children.ru_stime,
                  "rss_mb": me.ru_maxrss / 1024, "shards": report.shards,
                  "committed": report.shards_committed, "items": report.items,
                  "ok": report.ok, "failed": len(report.shards_failed)}))
"""


def _env() -> dict[str, str]:
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


def tiny_jpeg() -> bytes:
    """One 16x16 JPEG (a few hundred bytes): every sample of the billions part."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tar_bytes(tar: int, per: int, data: bytes) -> bytes:
    """A ustar archive of ``per`` samples (one ``.jpg`` member each), keys unique across tars,
    written as bytes (header, data, padding) rather than through ``tarfile.open``."""
    pad = b"\0" * (-len(data) % 512)
    chunks = []
    for i in range(per):
        info = tarfile.TarInfo(f"s{tar:06d}_{i:06d}.jpg")
        info.size = len(data)
        info.mtime = 1_700_000_000
        chunks += [info.tobuf(format=tarfile.USTAR_FORMAT), data, pad]
    return b"".join(chunks) + b"\0" * 1024


def make_tiny_tars(folder: Path, count: int, per: int) -> str:
    """``count`` tars ``000000.tar``... of ``per`` tiny JPEG samples, made once; their brace
    range."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder.parent / f"{folder.name}.done"  # beside, not in, the folder (a source itself)
    if not done.exists():
        data = tiny_jpeg()
        for t in range(count):
            (folder / f"{t:06d}.tar").write_bytes(tar_bytes(t, per, data))
        done.touch()
    return str(folder / f"{{000000..{count - 1:06d}}}.tar")


def run_measured(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``args`` in a fresh process (see ``_COMMAND``); raises with its stderr if it failed."""
    done = subprocess.run([sys.executable, "-c", _COMMAND, *args], env=env or _env(),
                          capture_output=True, text=True, check=True)
    r = json.loads(done.stdout)
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r['rc']}): {r['stderr']}")
    return r


def plan_command(source: str, out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m gristmill plan SOURCE -o OUT --json`` measured; its JSON under ``plan``."""
    r = run_measured([sys.executable, "-m", "gristmill", "plan", source, "-o", str(out),
                      "--json"], env)
    r["plan"] = json.loads(r["stdout"])
    return r


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)  # a planner may not count


def _figures(r: dict[str, Any]) -> str:
    p = r["plan"]
    return (f"{r['seconds']:.1f} s, {r['rss_mb']:.0f} MB max RSS, {r['cpu']:.1f} s CPU; "
            f"{_count(p.get('items'))} items, {_count(p.get('shards'))} shards, prepare "
            f"{p.get('prepare_seconds')} s (calibration {p.get('calibration_seconds')} s)")


def bench_many_tars(count: int) -> list[str]:
    """1: planning ``count`` one-sample tars, as a brace range and as a folder."""
    brace = make_tiny_tars(WORK / f"tiny-{count}x1", count, 1)
    one = plan_command(make_tiny_tars(WORK / "tiny-1x1", 1, 1), WORK / "out-billions")
    lines = [f"billions: plan 1 tar of 1 sample (the fixed cost: interpreter, model, "
             f"calibration): {_figures(one)}"]
    for how, source in (("brace range", brace), ("folder", str(Path(brace).parent))):
        r = plan_command(source, WORK / "out-billions")
        lines.append(f"billions: plan {count:,} tars of 1 sample ({how}): {_figures(r)}; "
                     f"beyond 1 tar: {r['seconds'] - one['seconds']:+.1f} s, "
                     f"{r['rss_mb'] - one['rss_mb']:+.0f} MB (target < 60 s, < 1 GB)")
    return lines


def bench_samples_per_tar(count: int, rounds: int) -> list[str]:
    """2: planning ``count`` tars of 5,000 samples against ``count`` tars of 5 (median)."""
    sources = {per: make_tiny_tars(WORK / f"tiny-{count}x{per}", count, per) for per in (5, 5000)}
    runs: dict[int, list[dict[str, Any]]] = {5: [], 5000: []}
    for _ in range(rounds):
        for per, source in sources.items():
            runs[per].append(plan_command(source, WORK / "out-billions"))
    seconds = {per: statistics.median(r["seconds"] for r in rs) for per, rs in runs.items()}
    cpu = {per: statistics.median(r["cpu"] for r in rs) for per, rs in runs.items()}
    lines = []
    for per, rs in runs.items():
        each = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        lines.append(f"billions: plan {count} tars of {per:,} samples: {seconds[per]:.1f} s, "
                     f"median of {rounds} ({each}); last run: {_figures(rs[-1])}")
    lines.append(f"billions: 5,000 vs 5 samples per tar: {seconds[5000] / seconds[5]:.2f}x, "
                 f"{seconds[5000] - seconds[5]:+.1f} s (target <= 1.5x); CPU time (less "
                 f"sensitive to other load): {cpu[5000]:.1f} vs {cpu[5]:.1f} s, "
                 f"{cpu[5000] / cpu[5]:.2f}x (medians; the fixed cost of a plan is in both)")
    return lines


class RequestLog:
    """WSGI middleware: records each request's method, bucket, key, query and Range header."""

    def __init__(self, app: Any) -> None:
        self.app, self.lock, self.entries = app, threading.Lock(), []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        host = environ.get("HTTP_HOST", "").split(":")[0]
        if host.count(".") > 3 or (host and not host[0].isdigit() and "." in host):
            path = f"/{host.split('.')[0]}{path}"  # virtual-hosted style: the bucket in the host
        bucket, _, key = path.lstrip("/").partition("/")
        entry = {"method": environ.get("REQUEST_METHOD", ""), "bucket": bucket, "key": key,
                 "query": environ.get("QUERY_STRING", ""), "range": environ.get("HTTP_RANGE")}
        with self.lock:
            self.entries.append(entry)
        return self.app(environ, start_response)

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            entries, self.entries = self.entries, []
        return entries


@contextlib.contextmanager
def s3_server() -> Iterator[tuple[str, RequestLog]]:
    """moto's S3 server on 127.0.0.1 in a thread of this process (as ``ThreadedMotoServer`` builds
    it), its app wrapped in a ``RequestLog``; yields the endpoint and the log."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Quiet(MotoRequestHandler):
        def log_request(self, *args: Any) -> None:  # the log is ours; no line per request
            pass

    log = RequestLog(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, log, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        thread.join(10)


def bench_s3(count: int, per: int = 50) -> list[str]:
    """3: ``gristmill plan`` of ``count`` tars in S3: which tar objects the driver read."""
    import boto3

    data = tiny_jpeg()
    width = max(2, len(str(count - 1)))
    bucket = "bench"
    with s3_server() as (endpoint, log):
        keys = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=bucket)
        names = [f"{t:0{width}d}.tar" for t in range(count)]
        for t, name in enumerate(names):
            client.put_object(Bucket=bucket, Key=name, Body=tar_bytes(t, per, data))
        log.take()  # the uploads
        source = f"s3://{bucket}/{{{0:0{width}d}..{count - 1:0{width}d}}}.tar"
        r = plan_command(source, WORK / "out-billions", _env() | keys)
        entries = log.take()
    tars = set(names)
    gets = [e for e in entries if e["method"] == "GET" and e["key"] in tars]
    ranged = [e for e in gets if e["range"]]
    heads = [e for e in entries if e["method"] == "HEAD" and e["key"] in tars]
    lists = [e for e in entries if e["method"] == "GET" and not e["key"]]
    read = sorted({e["key"] for e in gets})
    return [f"billions: plan {source} ({count} tars of {per} samples, server on 127.0.0.1): "
            f"{_figures(r)}",
            f"billions: tar objects read: {len(read)} of {count} (target <= 2); GETs of tar "
            f"objects {len(gets)} ({len(ranged)} ranged), HEADs {len(heads)}, bucket listings "
            f"{len(lists)}, requests in all {len(entries)}"
            + (f"; read: {', '.join(read[:8])}{' ...' if len(read) > 8 else ''}" if read else "")]


def _ray_job(source: str, out: Path, address: str) -> dict[str, Any]:
    """One job into a fresh ``out`` (an overwritten OUT keeps its run logs, and the report at
    the end of a run covers every one of them)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = _env()
    env["PYTHONPATH"] += f":{ROOT / 'tests'}"  # numpy_models
    done = subprocess.run([sys.executable, "-c", _RAY_DRIVER, source, str(out), address,
                           "numpy_models:ColourStats"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the Ray job failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_ray_shards(count: int, base: int = 20) -> list[str]:
    """4: the driver's CPU and wall time per shard handing out ``count`` one-item shards on a
    2-node local Ray cluster, and per shard beyond a ``base``-shard job."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "ray")]
    from cluster import local_cluster

    big = make_tiny_tars(WORK / f"tiny-{count}x1", count, 1)
    small = make_tiny_tars(WORK / f"tiny-{base}x1", base, 1)
    out = WORK / "out-ray-shards"
    with local_cluster(2) as cluster:
        address = cluster.cluster.address
        first = _ray_job(small, out, address)
        r = _ray_job(big, out, address)
    report = run_measured([sys.executable, "-m", "gristmill", "report", str(out)])
    if r["failed"] or first["failed"] or r["ok"] != count:
        raise RuntimeError(f"the Ray job did not compute its {count} items: {r}")
    shards = r["shards"] or count  # as the run reports them
    extra = max(1, shards - (first["shards"] or base))
    return [f"billions: Ray, 2 nodes, {shards:,} shards of 1 item ({r['ok']:,} items): driver "
            f"{r['cpu']:.1f} s CPU (user + system) over {r['seconds']:.1f} s wall: "
            f"{1000 * r['cpu'] / shards:.2f} ms CPU and "
            f"{1000 * r['seconds'] / shards:.2f} ms wall per shard; beyond the "
            f"{first['shards'] or base}-shard job ({first['cpu']:.1f} s CPU, "
            f"{first['seconds']:.1f} s): "
            f"{1000 * (r['cpu'] - first['cpu']) / extra:.2f} ms CPU and "
            f"{1000 * (r['seconds'] - first['seconds']) / extra:.2f} ms wall per shard; "
            f"driver {r['rss_mb']:.0f} MB max RSS, its children {r['children_cpu']:.1f} s CPU",
            f"billions: of which the run's report (the same report.html rebuilt alone, `gristmill "
            f"report OUT`, in its own interpreter): {report['seconds']:.1f} s, "
            f"{report['cpu']:.1f} s CPU; without it about "
            f"{1000 * max(0.0, r['cpu'] - report['cpu']) / shards:.2f} ms driver CPU per shard"]


def bench_billions(size: dict) -> Iterator[str]:
    """The four cases, each case's lines as soon as it is measured; a count of 0 skips it."""
    if size["tars"]:
        yield from bench_many_tars(size["tars"])
    if size["pairs"]:
        yield from bench_samples_per_tar(size["pairs"], size["rounds"])
    if size["s3_tars"]:
        yield from bench_s3(size["s3_tars"])
    if size["ray_shards"]:
        yield from bench_ray_shards(size["ray_shards"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--part", default="plan,decode")
    for name in ("tars", "pairs", "s3-tars", "ray-shards"):
        parser.add_argument(f"--{name}", type=int, help="billions: instead of the size's count")
    args = parser.parse_args(argv)
    size = dict(SIZES[args.size])
    for name in ("tars", "pairs", "s3_tars", "ray_shards"):
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    WORK.mkdir(parents=True, exist_ok=True)
    parts = {"plan": bench_plan, "decode": bench_decode, "ray": bench_ray,
             "billions": bench_billions}
    for part in args.part.split(","):
        for line in parts[part](size):
            print(line, flush=True)


if __name__ == "__main__":
    main()
