"""Heads for the several-models tests, importable as ``multi_models:NAME`` (numpy only).

``Score`` is a fixed linear score of its input rows, ``score(x) = x @ W + 1`` with ``W`` drawn from
seed 3, so a test can compute it independently on the first model's rows.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def weights(width: int) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((width, 2)).astype(np.float32)


def score(rows: np.ndarray) -> np.ndarray:
    """What ``Score`` computes, for the tests' own check."""
    return rows.reshape(len(rows), -1) @ weights(int(np.prod(rows.shape[1:]))) + 1.0


class Score:
    """A head: ``{"input": (n, ...), "name": (n,)}`` -> score (n, 2) and the names' lengths."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["input"]
        return {"score": score(rows), "name_length": np.array([len(n) for n in batch["name"]])}


class Pixels:
    """An image model (callable class): the mean of each channel of 32x32 uint8 pixels."""

    preprocess: ClassVar[dict] = {"resize": (32, 32), "layout": "NHWC"}
    outputs = ("mean",)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"mean": batch["image"].astype(np.float64).mean(axis=(1, 2))}
