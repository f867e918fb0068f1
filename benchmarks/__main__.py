"""``python -m benchmarks --size small|full``: every case side by side, ratios to gristmill.

Workloads: (a) decode-bound, 1920x1080 JPEGs through the bundled EfficientNet-Lite0; (b)
model-bound, 500x375 JPEGs through a ResNet-50 shape (``benchmarks.models:resnet50``); (c) Caffe
open_nsfw, run by ``benchmarks/caffe_nsfw.py`` when present: it must offer
``run(size: str, workdir: pathlib.Path) -> list[dict]`` returning rows with the keys of ``Row``.
Then memory (total PSS of 4 CPU workers vs 1), scale (plan and resume over a list of 1 M inputs),
the training loader, the Ray engine and start-up (``benchmarks/startup.py``: a whole small
``gristmill run`` against a bare ``import torch``).
Files are made once under ``.bench/`` (git-ignored); the report goes to ``.bench/results.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import make_jpegs, make_list

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
SIZES = {
    "small": {"a": 16, "b": 16, "naive": 4, "batches": 1, "sweep": "one", "scale": 100_000,
              "memory": 0},
    "medium": {"a": 96, "b": 64, "naive": 8, "batches": 2, "sweep": "all", "scale": 1_000_000,
               "memory": 64},
    "full": {"a": 384, "b": 256, "naive": 32, "batches": 4, "sweep": "all", "scale": 1_000_000,
             "memory": 64},
}


@dataclass
class Row:
    workload: str
    case: str
    images: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _pss_tree(root: int) -> int:
    """Sum of Pss (kB) over ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total


def child(case: str, *, sample_pss: bool = False, **args: object) -> dict:
    """Run one case in a fresh child; adds its max RSS (MB) and, if asked, peak tree PSS (MB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cases", case, json.dumps(args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak = [0]
    finished = threading.Event()

    def sample() -> None:
        # never proc.poll() here: it would reap the child before the wait4 below reads its usage
        while not finished.is_set():
            peak[0] = max(peak[0], _pss_tree(proc.pid))
            finished.wait(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_pss:
        sampler.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    finished.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sample_pss:
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["max_rss_mb"] = usage.ru_maxrss / 1024
    result["pss_mb"] = peak[0] / 1024
    return result


def workload(name: str, paths: list[str], ref: str, preset: str, size: dict) -> list[Row]:
    """limit, seed naive, seed tuned, DataLoader (best of a sweep) and gristmill on ``paths``."""
    cores = len(os.sched_getaffinity(0))
    rows = []

    def add(case: str, result: dict, note: str = "") -> None:
        rows.append(Row(name, case, int(result["images"]), float(result["seconds"]), note))
        print(f"  {name} {case}: {rows[-1].rate:.1f} img/s {note}", flush=True)

    model = child("limit_model", ref=ref, batch=32 if size["batches"] > 1 else 8,
                  batches=size["batches"])
    add("limit: model only", model,
        f"{cores} threads, preloaded batches; fastest of the module as written "
        f"{model['module_rate']:.1f} img/s and the workers' inference graph "
        f"{model['graph_rate']:.1f} img/s")
    decode = child("limit_decode", paths=paths, preset=preset)
    add("limit: decode only", decode, f"{cores} processes")
    m, d = model["images"] / model["seconds"], decode["images"] / decode["seconds"]
    bound = 1.0 / (1.0 / m + 1.0 / d)
    rows.append(Row(name, "limit: combined bound", round(bound * 1000), 1000.0,
                    "1/(1/decode + 1/model)"))
    add("seed naive", child("seed_naive", paths=paths[:size["naive"]], ref=ref),
        f"Pool.map, model per item, {size['naive']} items")
    add("seed tuned", child("seed_tuned", paths=paths, ref=ref, batch=32),
        "Pool + initializer, batches of 32")
    sweep = [cores] if size["sweep"] == "one" else sorted({max(1, cores // 2), cores, 2 * cores})
    best = max((child("dataloader", paths=paths, ref=ref, batch=32, workers=w) for w in sweep),
               key=lambda r: r["images"] / r["seconds"])
    add("DataLoader", best, f"best num_workers={best['num_workers']} of {sweep}")
    out = str(WORK / f"out-{name[0]}")
    result = child("gristmill_run", folder=str(Path(paths[0]).parent), out=out, ref=ref)
    add("gristmill", result, "defaults, end to end, " + _workers(result))
    if result["steady_seconds"] > 0:
        add("gristmill steady state", {"images": result["steady_images"],
                                       "seconds": result["steady_seconds"]},
            f"first batch to last; start-up took {result['prepare_seconds']:.1f} s")
    return rows


def _workers(result: dict) -> str:
    workers = result.get("workers") or []
    return ", ".join(f"{w['threads']} threads + {w['loaders']} loaders" for w in workers)


def memory(paths: list[str]) -> list[Row]:
    """Peak PSS of the whole job tree: 4 CPU workers against 1, ResNet-50 shape."""
    rows = []
    for count in (1, 4):
        r = child("gristmill_run", sample_pss=True, folder=str(Path(paths[0]).parent),
                  out=str(WORK / f"out-mem{count}"), ref="benchmarks.models:resnet50",
                  workers=count, shard_size=max(1, len(paths) // 8))  # every worker busy
        rows.append(Row("memory", f"{count} CPU worker(s)", int(r["images"]), float(r["seconds"]),
                        f"peak PSS {r['pss_mb']:.0f} MB"))
        rows[-1].pss = r["pss_mb"]  # type: ignore[attr-defined]
        print(f"  memory {count} workers: peak PSS {r['pss_mb']:.0f} MB", flush=True)
    return rows


def scale(count: int) -> list[Row]:
    """Plan a job over ``count`` listed inputs, then resume it with every other shard committed;
    resume one with ``count // 10`` shards all committed (shards of 10); list ``10 × count``
    loose names from one list file."""
    list_file = WORK / f"list-{count}.txt"
    if not list_file.exists():
        make_list(list_file, count)
    out = WORK / "out-scale"
    first = child("plan_scale", list_file=str(list_file), out=str(out), resume=False)
    _fake_commits(out, every=2)
    again = child("plan_scale", list_file=str(list_file), out=str(out), resume=True)
    many = WORK / "out-scale-markers"
    child("plan_scale", list_file=str(list_file), out=str(many), resume=False, shard_size=10)
    _fake_commits(many, every=1)
    markers = child("plan_scale", list_file=str(list_file), out=str(many), resume=True,
                    shard_size=10)
    big = WORK / f"list-{10 * count}.txt"
    if not big.exists():
        make_list(big, 10 * count)
    listed = child("list_scale", list_file=str(big))
    rows = []
    for case, r in (("plan", first), ("resume", again), ("resume, shards of 10,", markers)):
        rows.append(Row("scale", f"{case} {count:,} inputs", int(r["images"]), float(r["seconds"]),
                        f"max RSS {r['max_rss_mb']:.0f} MB, {r['shards']} shards, "
                        f"{r['done']} done"))
        print(f"  scale {case}: {r['seconds']:.2f} s, max RSS {r['max_rss_mb']:.0f} MB, "
              f"{r['done']} of {r['shards']} shards committed", flush=True)
    rows.append(Row("scale", f"list {10 * count:,} loose names", int(listed["images"]),
                    float(listed["seconds"]), f"max RSS {listed['max_rss_mb']:.0f} MB"))
    print(f"  scale list {10 * count:,} names: {listed['seconds']:.2f} s, max RSS "
          f"{listed['max_rss_mb']:.0f} MB", flush=True)
    return rows


def _fake_commits(out: Path, every: int) -> None:
    """Every ``every``-th shard committed through the ledger's own commit path (empty shards: a
    marker with no rows and no files), eight at a time as several workers would."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(ROOT / "src"))
    from gristmill import ledger, outdir
    from gristmill.marker import Marker
    from gristmill.store import Store

    state = outdir.reopen(str(out))
    spec, inputs, store = state.spec, state.inputs, Store(str(out))

    def commit(shard: Any) -> bool:
        return ledger.commit_parts(store, {}, Marker(
            shard.id, shard.start, shard.stop, ok=0, errors=0,
            inputs=inputs.digest(shard.start, shard.stop), spec=spec.identity_hash(),
            format=spec.format, error_rows=()))

    with ThreadPoolExecutor(8) as pool:  # each commit waits on its fsync
        assert all(pool.map(commit, state.shards[::every]))


def caffe(size: str) -> list[Row]:
    path = Path(__file__).with_name("caffe_nsfw.py")
    if not path.exists():
        print("  (c) caffe: benchmarks/caffe_nsfw.py not present, skipped", flush=True)
        return []
    spec = importlib.util.spec_from_file_location("benchmarks.caffe_nsfw", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return [r if isinstance(r, Row) else Row(**r) for r in module.run(size, WORK)]


def report(rows: list[Row], size: str, seconds: float) -> str:
    from .report import render

    return render(rows, size=size, seconds=seconds, command=" ".join(["python -m benchmarks",
                                                                      *sys.argv[1:]]),
                  machine=f"{platform.processor() or platform.machine()}, "
                          f"{len(os.sched_getaffinity(0))} cores, {platform.system()}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--only", default="a,b,c,memory,scale,loader,ray,startup",
                        help="comma-separated parts to run (default: all)")
    args = parser.parse_args()
    size, parts = SIZES[args.size], set(args.only.split(","))
    WORK.mkdir(exist_ok=True)
    start = time.perf_counter()
    rows: list[Row] = []
    if "a" in parts:
        print("(a) decode-bound: 1920x1080 JPEGs, EfficientNet-Lite0", flush=True)
        paths = make_jpegs(WORK / f"hd-{size['a']}", size["a"], (1920, 1080))
        rows += workload("(a) decode-bound", paths, "efficientnet-lite0", "efficientnet", size)
    if "b" in parts:
        print("(b) model-bound: 500x375 JPEGs, ResNet-50 shape", flush=True)
        paths = make_jpegs(WORK / f"sd-{size['b']}", size["b"], (500, 375))
        rows += workload("(b) model-bound", paths, "benchmarks.models:resnet50", "imagenet", size)
    if "c" in parts:
        rows += caffe(args.size)
    if "memory" in parts and size["memory"]:
        print("memory: 1 vs 4 CPU workers, ResNet-50 shape", flush=True)
        rows += memory(make_jpegs(WORK / f"sd-{size['memory']}", size["memory"], (500, 375)))
    if "scale" in parts:
        print(f"scale: plan and resume over {size['scale']:,} listed inputs", flush=True)
        rows += scale(size["scale"])
    extra = []
    if "loader" in parts:
        print("loader: gristmill.Loader vs DataLoader, 1920x1080 JPEGs + augmentation", flush=True)
        from . import loader_vs_dataloader

        r = loader_vs_dataloader.main(args.size if args.size in loader_vs_dataloader.SIZES
                                      else "small")
        extra.append(f"- training loader vs DataLoader (same decode + augmentation, same number "
                     f"of processes): {r['speed']:.2f}× images/s, {r['memory']:.2f}× memory "
                     f"(targets ≥ 1.5×, < 1)")
    if "ray" in parts:
        print("ray: 2-node cluster vs local engine", flush=True)
        from . import ray_overhead

        r = ray_overhead.main(args.size if args.size in ray_overhead.SIZES else "small")
        extra.append(f"- Ray engine, 2 nodes vs local engine on this machine, {r['items']} "
                     f"photos: {r['ray']:.1f} vs {r['local']:.1f} img/s, ray/local "
                     f"{r['ratio']:.2f} (target: overhead ≤ 15%, i.e. ≥ 0.85)")
    if "startup" in parts:
        print("startup: gristmill run on 32 photos vs a bare import torch", flush=True)
        from . import startup

        r = startup.main(startup.SIZES[args.size])
        extra.append(f"- start-up, `gristmill run` on {r['photos']} photos vs `python -c "
                     f"\"import torch\"` (whole commands, alternating, medians of {r['runs']}): "
                     f"{r['run']:.2f} vs {r['torch']:.2f} s, {r['ratio']:.2f}× (worst pair "
                     f"{r['worst_pair']:.2f}×; CPU seconds {r['cpu_ratio']:.2f}×; target ≤ 1.6×); "
                     f"a model's first run (nothing kept): {r['first_run']:.2f} s, "
                     f"{r['first_ratio']:.2f}×")
    text = report(rows, args.size, time.perf_counter() - start)
    if extra:
        text += "\n" + "\n".join(extra) + "\n"
    (WORK / "results.md").write_text(text)
    print(text)
    for name in ("out-a", "out-b", "out-mem1", "out-mem4"):
        shutil.rmtree(WORK / name, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
