"""``python -m benchmarks.bf16 [--rounds N] [--batch B] [--threads T]``: bf16 vs fp32.

Two model shapes, each built through gristmill's own model backends (what a worker runs): the
ResNet-50 shape (``benchmarks.models:resnet50_calibrated``: random weights, BatchNorm statistics
measured on a random batch) and a ViT-B/32-shape image tower (a ``transformers`` CLIP model with
ViT-B/32's vision configuration, random weights, saved as a local snapshot and run as ``hf:PATH``
with output ``image_embeds``). For each, the fp32 and the ``--precision bf16`` model are timed on
the same batch of the bundled photos, alternating, a few batches per round; the medians give
images/s and their ratio. The cosine similarity of bf16's outputs to fp32's (per row, the minimum
over the batch) says what the speed costs. bf16 is fast only on CPUs with AVX-512 BF16 or AMX; the
first line printed says whether this one has them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "bf16"


def vit_b32_snapshot() -> Path:
    """A CLIP model with ViT-B/32's vision configuration (random weights) as a local snapshot."""
    folder = WORK / "vit-b32"
    if (folder / "config.json").exists():
        return folder
    import json

    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "patch_size": 32, "image_size": 224},
        # the text tower is not timed: keep it small
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 1000},
        projection_dim=512)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": 224}, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "do_normalize": True,
        "image_mean": [0.4815, 0.4578, 0.4082], "image_std": [0.2686, 0.2613, 0.2758],
        "resample": 3}))
    return folder


def photo_batch(size: int) -> np.ndarray:
    """The bundled photos (repeated to ``size``) at 224x224, ImageNet-normalised, NCHW: real images,
    because a random network's outputs for noise are dominated by rounding noise."""
    from PIL import Image

    paths = sorted((ROOT / "examples" / "photos").rglob("*.jpg"))
    images = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BICUBIC),
                         np.float32) / 255 for p in paths]
    x = (np.stack([images[i % len(images)] for i in range(size)])
         - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def build(ref: str, output: str, precision: str, threads: int):
    from gristmill import models
    from gristmill.spec import ModelSpec

    model = models.create(ModelSpec(ref=ref), outputs=(output,), device="cpu", threads=threads,
                          precision=precision)
    model.setup()
    return model


def measure(ref: str, output: str, batch: np.ndarray, rounds: int, threads: int) -> dict:
    fp32 = build(ref, output, "fp32", threads)
    bf16 = build(ref, output, "bf16", threads)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for model in (fp32, bf16):  # warm-up: first calls allocate and pick kernels
        model.predict(batch)
    reference = fp32.predict(batch)[output].reshape(len(batch), -1)
    low = bf16.predict(batch)[output].reshape(len(batch), -1)
    cos = np.sum(reference * low, 1) / (np.linalg.norm(reference, axis=1)
                                        * np.linalg.norm(low, axis=1))
    for _ in range(rounds):
        for name, model in (("fp32", fp32), ("bf16", bf16)):
            start = time.perf_counter()
            for _ in range(3):
                model.predict(batch)
            times[name].append(3 * len(batch) / (time.perf_counter() - start))
    rate = {k: statistics.median(v) for k, v in times.items()}
    return {"fp32": rate["fp32"], "bf16": rate["bf16"], "ratio": rate["bf16"] / rate["fp32"],
            "cosine": float(cos.min())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bf16", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    args = parser.parse_args(argv)
    import os

    threads = args.threads or os.cpu_count() or 1
    from gristmill.tuning import BF16_FLAGS, cpu_flags

    native = sorted((cpu_flags() or set()) & BF16_FLAGS)
    print(f"CPU bf16 support: {', '.join(native) or 'none (bf16 is emulated: expect a slowdown)'}"
          f"; threads {threads}, batch {args.batch}, {args.rounds} rounds", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    batch = photo_batch(args.batch)
    cases = [("ResNet-50 shape", "benchmarks.models:resnet50_calibrated", "features"),
             ("ViT-B/32 image tower", f"hf:{vit_b32_snapshot()}", "image_embeds")]
    for title, ref, output in cases:
        r = measure(ref, output, batch, args.rounds, threads)
        print(f"{title:22s} fp32 {r['fp32']:6.1f} img/s  bf16 {r['bf16']:6.1f} img/s  "
              f"ratio {r['ratio']:.2f}x  min cosine {r['cosine']:.5f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
