"""Fixtures for the training loader: a small ImageFolder tree of real photos (4 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
PER_CLASS = 8


def make_labeled(root: Path, *, per_class: int = PER_CLASS, side: int = 96) -> list[str]:
    """``root/<photo>/<k>.jpg``: the class is the photo, each file a different crop of it."""
    from photos import sample_photos

    photos = sample_photos()
    names = []
    for name in CLASSES:
        image = photos[name]
        h, w = image.shape[:2]
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            crop = image[k * h // 40:h - k * h // 50, k * w // 45:w - k * w // 55]
            pil = Image.fromarray(np.ascontiguousarray(crop))
            pil.thumbnail((side, side))
            pil.save(root / name / f"{k}.jpg", quality=90)
            names.append(f"{name}/{k}.jpg")
    return sorted(names)


@pytest.fixture(scope="session")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 real photos in 4 class folders (ImageFolder layout)."""
    root = tmp_path_factory.mktemp("labeled")
    make_labeled(root)
    return root
