"""``python -m benchmarks.multi --size small|full --part two|ray|all``: several models, one pass.

- ``two``: two cheap models (``cheap_a`` at 224x224, ``cheap_b`` at 160x160: a strided conv, a pool
  and a linear layer, so decoding is what bounds the job) over decode-bound 1920x1080 JPEGs: one
  ``gristmill run`` with both (``--model a=... --model b=...``, one decode per image) against two
  separate ``gristmill run`` commands. Whole commands, sizing left to gristmill.
- ``ray``: three models, the bundled EfficientNet-Lite0, an ONNX net (``cheap_b`` exported) and a
  head on Lite0's features (``Aesthetic``, a linear score), as one ``gristmill run`` against a
  competent Ray Data pipeline chaining the same models (``benchmarks/ray_multi_peer.py``).

Cases alternate within each round; the medians of the rounds count. Files are made once under
``.bench/multi/``; the table goes to stdout and ``.bench/multi.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "multi"
# "two" is decode-bound only once decoding outweighs start-up (about 2.5 s a command here): at
# 192 images the separate runs' second start-up is half of their time, at 960 the decodes are
SIZES = {"small": {"images": 32, "two_images": 32, "rounds": 1},
         "full": {"images": 192, "two_images": 960, "rounds": 3}}
CHEAP_B = ["--resize", "b=182", "--crop", "b=160x160"]
TIMEOUT = 1800  # seconds per command: a hung peer must not hang the benchmark


def _cheap(seed: int) -> object:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 7, stride=4, padding=3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 8)).eval()


def cheap_a() -> object:
    return _cheap(1)


def cheap_b() -> object:
    return _cheap(2)


class Aesthetic:
    """A head: a fixed linear score of EfficientNet-Lite0's 1280 features (numpy only)."""

    def __init__(self) -> None:
        self.weights = np.random.default_rng(0).standard_normal((1280, 1)).astype(np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"score": batch["input"] @ self.weights}


def onnx_net(folder: Path) -> Path:
    """``cheap_b`` as ONNX with a fixed 160x160 input (made once)."""
    path = folder / "cheap_b.onnx"
    if not path.exists():
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(cheap_b(), torch.zeros(1, 3, 160, 160), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def _timed(command: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=TIMEOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def _run(source: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "gristmill", "run", str(source), "-o", str(out),
            "--overwrite", "--format", "npy", "--progress", "none", *options]


def bench_two(size: dict, folder: Path) -> list[tuple[str, float, float]]:
    from .data import make_jpegs

    source = folder / f"jpegs1080-{size['two_images']}"
    make_jpegs(source, size["two_images"], (1920, 1080))
    one = _run(source, folder / "one", "--model", "a=benchmarks.multi:cheap_a",
               "--model", "b=benchmarks.multi:cheap_b", *CHEAP_B)
    alone = [_run(source, folder / "alone-a", "--model", "benchmarks.multi:cheap_a"),
             _run(source, folder / "alone-b", "--model", "benchmarks.multi:cheap_b",
                  *[v.replace("b=", "") for v in CHEAP_B])]
    times: dict[str, list[float]] = {"one pass": [], "two runs": []}
    for _ in range(size["rounds"]):
        times["one pass"].append(_timed(one))
        times["two runs"].append(sum(_timed(c) for c in alone))
    return _rows(times, size["two_images"], "two runs")


def bench_ray(size: dict, folder: Path) -> list[tuple[str, float, float]]:
    from .data import make_jpegs

    source = folder / f"jpegs1080-{size['images']}"
    make_jpegs(source, size["images"], (1920, 1080))
    net = onnx_net(folder)
    ours = _run(source, folder / "three", "--model", "lite=efficientnet-lite0",
                "--model", f"net={net}", "--model", "aes=benchmarks.multi:Aesthetic@lite/features",
                "--outputs", "lite/features,net/logits,aes/score",
                "--resize", "net=182", "--crop", "net=160x160")
    peer = [sys.executable, str(ROOT / "benchmarks" / "ray_multi_peer.py"), str(source),
            str(net), str(folder / "peer")]
    times: dict[str, list[float]] = {"gristmill, one pass": [], "Ray Data chain": []}
    for _ in range(size["rounds"]):
        times["gristmill, one pass"].append(_timed(ours))
        times["Ray Data chain"].append(_timed(peer))
    return _rows(times, size["images"], "Ray Data chain")


def _rows(times: dict[str, list[float]], images: int,
          baseline: str) -> list[tuple[str, float, float]]:
    base = statistics.median(times[baseline])
    return [(case, statistics.median(t), base / statistics.median(t))
            for case, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--part", choices=["two", "ray", "all"], default="all")
    args = parser.parse_args()
    size = SIZES[args.size]
    WORK.mkdir(parents=True, exist_ok=True)
    lines = [f"JPEGs of 1920x1080 (two: {size['two_images']}, ray: {size['images']}), "
             f"{size['rounds']} round(s), medians; "
             f"{len(os.sched_getaffinity(0))} cores", "",
             "| part | case | seconds | speed-up |", "|---|---|---:|---:|"]
    parts = {"two": bench_two, "ray": bench_ray}
    for name, bench in parts.items():
        if args.part in (name, "all"):
            for case, seconds, ratio in bench(size, WORK):
                lines.append(f"| {name} | {case} | {seconds:.1f} | {ratio:.2f}x |")
    text = "\n".join(lines)
    print(text)
    (WORK.parent / "multi.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
