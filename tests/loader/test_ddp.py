"""Two real DDP ranks (gloo, CPU) train a small CNN fed by gristmill.Loader."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from loader_hooks import ddp_rank

from gristmill.loader.order import epoch_order, rank_indices

pytestmark = pytest.mark.slow


def test_two_ranks_see_every_sample_once_and_learn(labeled: Path, tmp_path: Path) -> None:
    world, epochs = 2, 4
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"rank{r}.json" for r in range(world)]
    procs = [ctx.Process(target=ddp_rank, args=(r, world, str(tmp_path / "init"), str(labeled),
                                                str(outs[r]), epochs)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    runs = [json.loads(o.read_text()) for o in outs]
    n = 32
    orders = []
    for epoch in range(epochs):
        per_rank = [run["seen"][epoch] for run in runs]
        assert len(per_rank[0]) == len(per_rank[1]) == n // world  # equal shares
        assert sorted(per_rank[0] + per_rank[1]) == list(range(n))  # each sample exactly once
        for r in range(world):  # the same seed gives the same order, recomputed independently
            order = epoch_order(n, seed=7, epoch=epoch, shuffle=True)
            assert per_rank[r] == rank_indices(order, rank=r, world_size=world).tolist()
        orders.append(per_rank[0] + per_rank[1])
    assert len({tuple(o) for o in orders}) == epochs  # a new order every epoch
    first = np.mean([run["losses"][0] for run in runs])
    last = np.mean([run["losses"][-1] for run in runs])
    assert last < first * 0.8, (first, last)
