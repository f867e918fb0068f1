"""Sample order for training: pure functions of (n, seed, epoch, rank, world size). No I/O.

Contract: ``epoch_order`` is a permutation of ``range(n)`` that depends only on ``(seed, epoch)``
(identity when not shuffling); ``rank_indices`` cuts it into ``world_size`` disjoint, equally long
slices; ``batch_spans`` cuts one slice into batches. Every rank computes the same order on its own,
so nothing has to be communicated between ranks.

Remainder policy (``uneven``): when ``n`` is not a multiple of ``world_size``,

- ``"pad"`` (default, as ``torch.utils.data.DistributedSampler``): the order is extended by wrapping
  around to its start, so every sample is seen at least once per epoch and at most
  ``world_size - 1`` samples twice;
- ``"drop"``: the last ``n % world_size`` samples of the (shuffled) order are left out this epoch;
  with shuffling a different few each epoch.

Equal slices matter: under DDP every rank must run the same number of steps, or the gradient
all-reduce of the longer rank waits forever.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Uneven = Literal["pad", "drop"]


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's order of sample indices (int64), the same on every rank and every run."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def rank_indices(order: np.ndarray, *, rank: int, world_size: int,
                 uneven: Uneven = "pad") -> np.ndarray:
    """This rank's slice of ``order``: interleaved (``order[rank::world_size]``), equal lengths."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    n = len(order)
    if uneven == "drop":
        order = order[:n - n % world_size]
    elif n % world_size:
        if n == 0:
            return order
        pad = world_size - n % world_size
        reps = -(-pad // n)  # fewer samples than ranks: wrap more than once
        order = np.concatenate([order, np.tile(order, reps)[:pad]])
    return order[rank::world_size]


def batch_spans(count: int, batch_size: int, *, drop_last: bool) -> list[tuple[int, int]]:
    """[start, stop) positions of each batch in a slice of ``count`` samples."""
    stop = count - count % batch_size if drop_last else count
    return [(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]


def task_seed(seed: int, epoch: int) -> int:
    """One integer naming (seed, epoch); loaders draw item ``i``'s randomness from (it, i)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def item_rng(task_seed_: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation: a function of (seed, epoch, sample index) only,
    so a batch made again (after a loader death, or on resume) is pixel-identical."""
    return np.random.default_rng([task_seed_, index])
