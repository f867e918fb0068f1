"""Module-level functions that spawned processes can import: a slow hook and a DDP rank."""

from __future__ import annotations

import json
import time

import numpy as np


def slow_hook(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Identity that takes a while, so a killed loader dies in the middle of a batch."""
    time.sleep(0.02)
    return rgb


def ddp_rank(rank: int, world: int, init_file: str, root: str, out: str, epochs: int) -> None:
    """One DDP rank: train a small CNN on ``root`` fed by gristmill.Loader; dump what it saw."""
    import torch
    import torch.distributed as dist
    from torch import nn

    import gristmill

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    seen: list[list[int]] = []
    losses: list[list[float]] = []
    augment = gristmill.Augment(size=(32, 32), scale=(0.5, 1.0))
    with gristmill.Loader(root, batch_size=4, augment=augment, shuffle=True, seed=7,
                          workers=1) as loader:
        assert (loader.rank, loader.world_size) == (rank, world)  # read from torch.distributed
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            seen.append([])
            losses.append([])
            for batch in loader:
                images, labels = batch
                loss = nn.functional.cross_entropy(ddp(images), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen[-1] += batch.indices.tolist()
                losses[-1].append(float(loss))
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump({"seen": seen, "losses": losses}, f)


def fill_with_pid(item: bytes, row: np.ndarray, task: object, index: int) -> dict:
    """A loader fill that writes the filling process's pid into the row (no decoding)."""
    import os

    row[:] = os.getpid()
    return {}
