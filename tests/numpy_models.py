"""Callable-class models with no torch inside (numpy only), importable as ``numpy_models:NAME``.

Kept apart from ``models_for_tests`` (which imports torch) so a test can show that such a model
runs without torch in it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class ColourStats:
    """Per image: mean and spread of each channel, a fixed random projection, and the name."""

    def __init__(self) -> None:
        self.projection = np.random.default_rng(7).standard_normal((3 * 8 * 8, 4))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = batch["image"]
        if image.dtype != np.uint8:
            raise TypeError(f"expected uint8 pixels, got {image.dtype}")
        pixels = image.astype(np.float64)
        small = pixels[:, ::28, ::28, :].reshape(len(image), -1)  # 224 / 28 = 8 per side
        return {"mean": pixels.mean(axis=(1, 2)), "std": pixels.std(axis=(1, 2)),
                "projected": small @ self.projection,
                "name_length": np.array([len(n) for n in batch["name"]])}


class Normalised:
    """Declares its preprocessing (normalised floats, 32x32, NCHW) and its output names."""

    preprocess: ClassVar[dict] = {"resize": (32, 32), "mean": (127.5,) * 3, "std": (127.5,) * 3,
                  "layout": "NCHW"}
    outputs = ("centre",)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = batch["image"]
        assert image.dtype == np.float32 and image.shape[1:] == (3, 32, 32), image.shape
        return {"centre": image[:, :, 16, 16]}


class ReturnsAList:
    def __call__(self, batch: dict[str, np.ndarray]) -> list:
        return [1, 2]


class RefusesBlank:
    """Raises on an all-black image: a worker's blank warm-up input (``ShardRunner._warm``) must
    cost it nothing. Declares its outputs, so the driver's own blank probe never runs."""

    outputs = ("mean",)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = batch["image"]
        if not image.any(axis=(1, 2, 3)).all():
            raise ValueError("an all-black image")
        return {"mean": image.astype(np.float64).mean(axis=(1, 2, 3))}
