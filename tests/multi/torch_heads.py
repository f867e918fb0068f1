"""A PyTorch head for the several-models tests, importable as ``torch_heads:linear_head``."""

from __future__ import annotations

import torch
from torch import nn


def linear_head() -> nn.Module:
    """A fixed linear map of 5 features to 3 (``models_for_tests.TinyCNN``'s output width)."""
    torch.manual_seed(4)
    return nn.Linear(5, 3).eval()
