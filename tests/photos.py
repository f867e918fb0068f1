"""Real photographs for tests, from the samples scikit-image and scikit-learn ship (no download).

``make_tree`` writes them as JPEGs into nested folders with repeated basenames: every folder holds
the same file names, each folder a slightly different crop, so no two files are byte-identical and
a tool that records basenames would collide.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "colorwheel", "retina")
GREY = ("camera", "coins", "moon", "clock")


def sample_photos() -> dict[str, np.ndarray]:
    """name -> RGB uint8 array, at most 640 pixels on the longer side."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in COLOUR + GREY}
    for name, image in zip(("china", "flower"), load_sample_images().images, strict=True):
        photos[name] = image
    out = {}
    for name, image in photos.items():
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, :3]))
        pil.thumbnail((640, 640))
        out[name] = np.asarray(pil)
    return out


def make_tree(root: Path, *, folders: int = 9, quality: int = 90) -> list[str]:
    """Write ``folders`` x 14 photos as ``root/gN/[sub/]name.jpg``; returns the relative names."""
    photos = sample_photos()
    names = []
    for k in range(folders):
        folder = root / f"g{k}" / ("sub" if k % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in photos.items():
            h, w = image.shape[:2]
            crop = image[k * h // 60:h - k * h // 80, k * w // 70:w - k * w // 90]
            path = folder / f"{name}.jpg"
            Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=quality)
            names.append(os.path.relpath(path, root))
    return sorted(names)
