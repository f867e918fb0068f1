"""A tiny deterministic torch model for fault tests: ``tinynet:make`` (fast on one CPU core).

``tinynet:gated`` lets a test hold a job at a point it chose instead of racing it: with
``TINYNET_HOLD`` naming a file in the job's environment, each worker process runs its first
``TINYNET_FREE`` batches (default 0) and then holds every batch while that file exists, after
appending its pid to ``<hold>.held``. A test waits for that file (a worker is holding: the job
cannot end), does what it must while the job is certainly running, then deletes the hold file.
A worker's blank warm-up input is not a batch. The driver (``describe``, calibration) never
holds, and without ``TINYNET_HOLD`` the model is ``slow``.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import torch
from torch import nn

HOLD = "TINYNET_HOLD"
FREE = "TINYNET_FREE"
HOLD_LIMIT = 300.0  # seconds: a hold file a failed test left behind never hangs a job for good


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
        time.sleep(0.05)  # keeps a 2 000-image job alive long enough to kill its processes
        return self.net(x)


def slow() -> nn.Module:
    """``make`` plus 50 ms per batch: the same features, a job that lasts a few seconds more."""
    return _Slow()


class _Gated(_Slow):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hold = os.environ.get(HOLD)
        # not while torch.fx traces the module (the driver and the workers both do), never in
        # the driver (only a worker process has a multiprocessing parent), and not for the
        # worker's warm-up input before its first batch (one blank row: ``ShardRunner._warm``)
        if (hold and not isinstance(x, torch.fx.Proxy) and multiprocessing.parent_process()
                and not _blank(x)):
            self.batches += 1
            if self.batches > int(os.environ.get(FREE, "0")):
                _hold_while(hold)
        return super().forward(x)


def _blank(x: torch.Tensor) -> bool:
    return x.shape[0] == 1 and not bool(x.any())


def _hold_while(hold: str) -> None:
    if not os.path.exists(hold):
        return
    with open(f"{hold}.held", "a") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + HOLD_LIMIT
    while os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.01)


def gated() -> nn.Module:
    """``slow`` that a test can hold (see the module docstring): the same features."""
    return _Gated()


def held(hold: str) -> list[int]:
    """The pids of the worker processes that have held a batch under ``hold`` (test side)."""
    try:
        with open(f"{hold}.held") as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
