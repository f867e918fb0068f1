"""Order policy: pure functions, no processes."""

from __future__ import annotations

import numpy as np
import pytest

from gristmill.loader.order import batch_spans, epoch_order, item_rng, rank_indices, task_seed


def test_epoch_order_is_a_reproducible_permutation_new_each_epoch() -> None:
    a = epoch_order(50, seed=3, epoch=0, shuffle=True)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=0, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=0, shuffle=True))
    assert epoch_order(5, seed=3, epoch=9, shuffle=False).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_pad_gives_equal_shares_covering_everything(n: int, world: int) -> None:
    order = epoch_order(n, seed=1, epoch=2, shuffle=True)
    shares = [rank_indices(order, rank=r, world_size=world).tolist() for r in range(world)]
    assert len({len(s) for s in shares}) == 1
    together = [i for s in shares for i in s]
    assert set(together) == set(range(n))
    assert len(together) == (-(-n // world) * world if n else 0)


@pytest.mark.parametrize("n", [7, 12, 13])
def test_drop_gives_equal_disjoint_shares(n: int) -> None:
    order = epoch_order(n, seed=1, epoch=0, shuffle=True)
    shares = [rank_indices(order, rank=r, world_size=3, uneven="drop").tolist() for r in range(3)]
    together = [i for s in shares for i in s]
    assert len({len(s) for s in shares}) == 1
    assert len(together) == len(set(together)) == n - n % 3


def test_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match="rank"):
        rank_indices(np.arange(4), rank=2, world_size=2)


def test_batch_spans() -> None:
    assert batch_spans(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
    assert batch_spans(10, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert batch_spans(3, 4, drop_last=True) == []


def test_item_randomness_depends_on_seed_epoch_and_index_only() -> None:
    s = task_seed(0, 1)
    assert item_rng(s, 5).random() == item_rng(s, 5).random()
    assert item_rng(s, 5).random() != item_rng(s, 6).random()
    assert item_rng(s, 5).random() != item_rng(task_seed(0, 2), 5).random()
