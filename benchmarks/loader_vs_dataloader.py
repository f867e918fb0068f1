"""gristmill.Loader against torch.utils.data.DataLoader: same decode + augmentation, 1080p JPEGs.

Both sides read JPEGs made from real photos (scikit-image / scikit-learn samples, scaled to
1920x1080), make a random resized crop to 224x224 (torchvision's parameters, written out by hand:
there is no torchvision here) and a random horizontal flip, normalise with ImageNet mean/std into
float32 NCHW, and deliver batches of 32 with the same number of loader processes. The DataLoader
side is the usual recipe: a map-style Dataset with PIL (``Image.open().convert("RGB")``, ``crop``,
``resize``), default collate, fork workers.

Each side runs in its own child process; the parent samples the proportional set size (PSS, from
``/proc/PID/smaps_rollup``) of that child and all its descendants every 50 ms and keeps the peak,
so shared memory is counted once. Throughput is images per second over the whole epoch, process
start included, and after the first batch (steady state). The two sides run alternately
(``ROUNDS``); the fastest round and the highest memory peak of each side are reported.

Usage: ``python benchmarks/loader_vs_dataloader.py --size small|full`` (or ``main(size)``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

SIZES = {"small": 128, "full": 1024}
ROUNDS = {"small": 3, "full": 1}
BATCH, WORKERS, OUT = 32, 2, (224, 224)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(folder: Path, count: int) -> Path:
    """``count`` 1920x1080 JPEGs from real photos (cached: made once per count)."""
    import numpy as np
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    photos = [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos += list(load_sample_images().images)
    for k in range(count):
        image = photos[k % len(photos)]
        h, w = image.shape[:2]
        dy, dx = (k * 7) % (h // 8), (k * 11) % (w // 8)  # every file a different crop
        crop = Image.fromarray(np.ascontiguousarray(image[dy:h - h // 8 + dy, dx:w - w // 8 + dx]))
        crop.resize((1920, 1080), Image.Resampling.BICUBIC).save(folder / f"{k:05d}.jpg",
                                                                 quality=90)
    return folder


def _rrc_params(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params(scale=(0.08, 1), ratio=(3/4, 4/3))."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    return 0, 0, h, w


def _torch_epoch(folder: Path) -> tuple[int, float, float]:
    import numpy as np
    import torch
    from PIL import Image

    class HandAugmented(torch.utils.data.Dataset):
        def __init__(self, paths: list[Path]) -> None:
            self.paths = paths
            self.mean = torch.tensor(MEAN).view(3, 1, 1)
            self.std = torch.tensor(STD).view(3, 1, 1)

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            rng = random.Random(i)
            img = Image.open(self.paths[i]).convert("RGB")
            top, left, h, w = _rrc_params(*img.size, rng)
            img = img.crop((left, top, left + w, top + h)).resize(OUT, Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()
            return (x.div_(255) - self.mean) / self.std, -1

    data = HandAugmented(sorted(folder.glob("*.jpg")))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True,
                                         num_workers=WORKERS)
    return _time(loader)


def _gristmill_epoch(folder: Path) -> tuple[int, float, float]:
    import gristmill

    loader = gristmill.Loader(str(folder), batch_size=BATCH, workers=WORKERS, shuffle=True,
                              augment=gristmill.Augment(size=OUT))
    with loader:
        return _time(loader)


def _time(loader: object) -> tuple[int, float, float]:
    start = time.perf_counter()
    first = None
    n = n_first = 0
    for images, _labels in loader:  # type: ignore[attr-defined]
        n += len(images)
        if first is None:
            first, n_first = time.perf_counter(), n
    end = time.perf_counter()
    return n, n / (end - start), (n - n_first) / (end - first) if first else 0.0


def _tree_pss(root: int) -> int:
    """PSS in bytes of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total


def _measure(kind: str, folder: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, "--one", kind, str(folder)], env=env,
                            stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _tree_pss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{kind} run failed (exit {proc.returncode})")
    n, overall, steady = json.loads(out.strip().splitlines()[-1])
    return {"images": n, "images_per_s": overall, "steady_images_per_s": steady,
            "peak_pss_mb": peak / 2**20}


def _best(results: list[dict[str, float]]) -> dict[str, float]:
    """The fastest round's speeds, and the highest peak memory of all rounds."""
    fastest = max(results, key=lambda r: r["images_per_s"])
    steady = max(r["steady_images_per_s"] for r in results)
    return {**fastest, "steady_images_per_s": steady,
            "peak_pss_mb": max(r["peak_pss_mb"] for r in results)}


def main(size: str = "small") -> dict[str, float]:
    """Run both loaders on ``SIZES[size]`` 1080p JPEGs; print and return the figures."""
    root = Path(__file__).resolve().parents[1] / ".bench" / f"jpeg1080-{SIZES[size]}"
    folder = make_jpegs(root, SIZES[size])
    runs: dict[str, list[dict[str, float]]] = {"dataloader": [], "gristmill": []}
    for _ in range(ROUNDS[size]):  # alternate, so a busy moment of the machine hits both
        for kind, results in runs.items():
            results.append(_measure(kind, folder))
    torch_run, ours = (_best(runs[k]) for k in ("dataloader", "gristmill"))
    for name, r in (("torch DataLoader", torch_run), ("gristmill.Loader", ours)):
        print(f"{name:17s} {r['images']:5.0f} images  {r['images_per_s']:7.1f} img/s  "
              f"steady {r['steady_images_per_s']:7.1f} img/s  peak PSS {r['peak_pss_mb']:7.1f} MB")
    ratios = {"speed": ours["images_per_s"] / torch_run["images_per_s"],
              "steady_speed": ours["steady_images_per_s"] / torch_run["steady_images_per_s"],
              "memory": ours["peak_pss_mb"] / torch_run["peak_pss_mb"]}
    print(f"gristmill / DataLoader: {ratios['speed']:.2f}x images/s "
          f"({ratios['steady_speed']:.2f}x steady), {ratios['memory']:.2f}x memory "
          f"({WORKERS} loader processes each, batch {BATCH}, 1920x1080 -> {OUT[0]}x{OUT[1]})")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(1)
        run = _gristmill_epoch if args.one[0] == "gristmill" else _torch_epoch
        print(json.dumps(run(Path(args.one[1]))))
    else:
        main(args.size)
