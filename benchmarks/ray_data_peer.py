"""The peer for ``benchmarks.sources --part ray``: the same job as a competent Ray Data script.

``python benchmarks/ray_data_peer.py tars|parquet SOURCE OUT``: read_webdataset / read_parquet (raw
bytes, no eager decode) → ``map_batches`` preprocessing (Pillow with JPEG draft mode, i.e. reduced
DCT decode, then the same resize 256 / centre crop 224 / normalise as gristmill's preset) → the
bundled EfficientNet-Lite0 in an actor pool → ``write_parquet`` of key + features.

Tuning for a 2-core machine: a local Ray instance with ``num_cpus`` = the cores, preprocessing
tasks and model actors each asking for half a CPU (whole CPUs starve the read tasks and the job
hangs), one torch thread per actor, two actors, batches of 16. Progress bars off.
"""

from __future__ import annotations

import glob
import io
import os
import sys

import numpy as np

CROP, RESIZE = 224, 256


def preprocess(batch: dict) -> dict:
    from PIL import Image

    column = "jpg"
    rows = np.empty((len(batch[column]), 3, CROP, CROP), np.float32)
    for i, data in enumerate(batch[column]):
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (RESIZE, RESIZE))  # libjpeg's reduced decode, as gristmill does
        img = img.convert("RGB")
        w, h = img.size
        scale = RESIZE / min(w, h)
        img = img.resize((max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale))),
                         Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - CROP) // 2, (h - CROP) // 2
        arr = np.asarray(img.crop((left, top, left + CROP, top + CROP)), np.float32)
        rows[i] = ((arr - 127.5) / 127.5).transpose(2, 0, 1)
    return {"key": np.asarray(batch["key"]), "image": rows}


class Model:
    def __init__(self) -> None:
        import torch

        from gristmill.models.efficientnet import efficientnet_lite0

        torch.set_num_threads(1)
        self.torch = torch
        self.net = efficientnet_lite0().eval()

    def __call__(self, batch: dict) -> dict:
        with self.torch.inference_mode():
            out = self.net(self.torch.from_numpy(batch["image"]))
        return {"key": batch["key"], "features": out["features"].numpy()}


def main(kind: str, source: str, out: str) -> None:
    import ray

    cores = len(os.sched_getaffinity(0))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    paths = sorted(glob.glob(source))
    if kind == "tars":
        ds = ray.data.read_webdataset(paths, decoder=None)
        ds = ds.rename_columns({"__key__": "key"})
    else:
        ds = ray.data.read_parquet(paths, columns=["key", "jpg"])
    ds = ds.map_batches(preprocess, batch_size=16, num_cpus=0.5, batch_format="numpy")
    ds = ds.map_batches(Model, batch_size=16, num_cpus=0.5, concurrency=2,
                        batch_format="numpy")
    ds.write_parquet(out)
    ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
