"""Benchmark inputs made from real photographs (scikit-image / scikit-learn samples, no download).

``make_jpegs(folder, count, size)`` writes ``count`` JPEGs of ``size`` (width, height): each a
sample photo cropped differently and resized (upscaled for 1920x1080), so every file is distinct and
decodes like a camera photo, not like noise or a flat colour.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _photos() -> list[np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from photos import sample_photos

    return [p for p in sample_photos().values() if min(p.shape[:2]) >= 200]


def make_jpegs(folder: Path, count: int, size: tuple[int, int], quality: int = 90) -> list[str]:
    """Write the files once (kept if already there); return their paths, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:05d}.jpg" for i in range(count)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    photos = _photos()
    for i, path in enumerate(paths):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        k = (i // len(photos)) % 9
        crop = photo[k * h // 40:h - (8 - k) * h // 50, (8 - k) * w // 60:w - k * w // 70]
        img = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.BICUBIC)
        img.save(path, quality=quality)
    return [str(p) for p in paths]


def make_list(path: Path, count: int) -> None:
    """A text list of ``count`` paths (the files need not exist) in 1000-file folders."""
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"d{i // 1000:04d}/img{i:07d}.jpg\n")
    os.utime(path)
