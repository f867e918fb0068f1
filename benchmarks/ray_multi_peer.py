"""The peer for ``benchmarks.multi --part ray``: three models over the same images as a competent
Ray Data pipeline, each model a ``map_batches`` stage over the decoded images.

``python benchmarks/ray_multi_peer.py SOURCE_FOLDER NET.onnx OUT``: ``read_binary_files`` →
``map_batches`` decode once (Pillow with JPEG draft mode, the reduced DCT decode) into both inputs
(Lite0's resize 256 / crop 224 / (x - 127.5) / 127.5, and the ONNX net's resize 182 / crop 160 /
ImageNet mean and std) → the bundled EfficientNet-Lite0 in an actor pool → the ONNX net in an actor
pool → the head (a linear score of Lite0's features) → ``write_parquet``.

Tuned as ``ray_data_peer.py`` for a 2-core machine: a local Ray with ``num_cpus`` = the cores,
each stage asking for a fraction of a CPU (half for each of the two Lite0 actors, a quarter for the
reads, the decode, the ONNX actor and the head), one thread per model actor, batches of 16.
"""

from __future__ import annotations

import glob
import io
import os
import sys

import numpy as np

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _resize_crop(img, resize: int, crop: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))),
                     Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), np.float32)


def decode(batch: dict) -> dict:
    from PIL import Image

    n = len(batch["bytes"])
    lite = np.empty((n, 3, 224, 224), np.float32)
    net = np.empty((n, 3, 160, 160), np.float32)
    for i, data in enumerate(batch["bytes"]):
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (256, 256))  # one reduced decode for both inputs
        img = img.convert("RGB")
        lite[i] = ((_resize_crop(img, 256, 224) - 127.5) / 127.5).transpose(2, 0, 1)
        net[i] = ((_resize_crop(img, 182, 160) - MEAN) / STD).transpose(2, 0, 1)
    return {"path": np.asarray(batch["path"]), "lite": lite, "net": net}


class Lite0:
    def __init__(self) -> None:
        import torch

        from gristmill.models.efficientnet import efficientnet_lite0

        torch.set_num_threads(1)
        self.torch = torch
        self.model = efficientnet_lite0().eval()

    def __call__(self, batch: dict) -> dict:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(batch["lite"]))
        return {"path": batch["path"], "net": batch["net"],
                "features": out["features"].numpy()}


class Net:
    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: dict) -> dict:
        logits = self.session.run(["logits"], {"x": batch["net"]})[0]
        return {"path": batch["path"], "features": batch["features"], "logits": logits}


def head(batch: dict) -> dict:
    weights = np.random.default_rng(0).standard_normal((1280, 1)).astype(np.float32)
    return {**batch, "score": batch["features"] @ weights}


def main(source: str, net: str, out: str) -> None:
    import ray

    cores = len(os.sched_getaffinity(0))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    paths = sorted(glob.glob(os.path.join(source, "*.jpg")))
    # every stage asks for a fraction of a CPU: read tasks asking for a whole one never get it
    # beside the actors, and the job hangs
    ds = ray.data.read_binary_files(paths, include_paths=True,
                                    ray_remote_args={"num_cpus": 0.25})
    ds = ds.map_batches(decode, batch_size=16, num_cpus=0.25, batch_format="numpy")
    ds = ds.map_batches(Lite0, batch_size=16, num_cpus=0.5, concurrency=2, batch_format="numpy")
    ds = ds.map_batches(Net, fn_constructor_args=(net,), batch_size=16, num_cpus=0.25,
                        concurrency=1, batch_format="numpy")
    ds = ds.map_batches(head, batch_size=16, num_cpus=0.25, batch_format="numpy")
    ds.write_parquet(out)
    ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
