"""A tiny deterministic torch model for fault tests: ``tinynet:make`` (fast on one CPU core)."""

from __future__ import annotations

import torch
from torch import nn


def make() -> nn.Module:
    """Conv -> ReLU -> global average pool: an 8-dim ``output`` per image, fixed weights."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class _Slow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(0.05)  # keeps a 2 000-image job alive long enough to kill its processes
        return self.net(x)


def slow() -> nn.Module:
    """``make`` plus 50 ms per batch: the same features, a job that lasts a few seconds more."""
    return _Slow()
