"""Helpers for the several-models tests."""

from __future__ import annotations

import numpy as np


def by_name(result, key: str) -> dict[str, np.ndarray]:
    """Output ``key`` of an opened result as {input name: row}."""
    return dict(zip(result.names, np.asarray(result[key][:]), strict=True))
