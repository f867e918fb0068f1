"""Small PyTorch models for tests, importable as ``models_for_tests:NAME`` factories.

``counting_cnn`` appends ``pid`` to the file named by ``GRISTMILL_TEST_LOADS`` each time it is
built, so a test can count model loads per process.
"""

from __future__ import annotations

import os

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


def tiny_cnn() -> nn.Module:
    return TinyCNN().eval()


def counting_cnn() -> nn.Module:
    path = os.environ.get("GRISTMILL_TEST_LOADS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    return TinyCNN().eval()


def not_a_module() -> int:
    return 3


def initialised_cnn() -> nn.Module:
    """Initialised the way torchvision's ResNets are (``nn.init.*_`` calls in the factory)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
    return model.eval()
