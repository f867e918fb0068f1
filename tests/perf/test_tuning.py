"""The budget policy: pure arithmetic, no processes."""

from __future__ import annotations

import pytest

from gristmill.tuning import MAX_THREADS, Budget, choose_budget, combined_bound


def test_model_bound_gives_every_core_to_the_model_and_one_loader() -> None:
    # ResNet-50 on 2 cores: decode ~300 img/s/core, model ~8 img/s/core
    assert choose_budget(2, 300.0, 8.0) == Budget(workers=1, threads=2, loaders=1, slots=3)


def test_decode_bound_gives_the_loaders_most_cores() -> None:
    b = choose_budget(8, 100.0, 400.0)  # decode costs 4x the model per image
    assert b.workers == 1 and b.loaders == 6 and b.threads == 2


def test_a_decode_share_that_rounds_to_one_loader_gets_a_second_one() -> None:
    # two cheap models over 1080p JPEGs on 2 cores: decode 194, models 671 img/s/core (share
    # 0.78 is fine, 0.74 rounded to one loader: 194 img/s where the bound is 301)
    assert choose_budget(2, 194.0, 580.0) == Budget(workers=1, threads=1, loaders=2, slots=4)
    assert choose_budget(2, 194.0, 671.0) == Budget(workers=1, threads=1, loaders=2, slots=4)


def test_balanced_two_cores_split_evenly() -> None:
    b = choose_budget(2, 100.0, 70.0)
    assert (b.workers, b.threads, b.loaders) == (1, 1, 1)


def test_many_cores_model_bound_make_several_workers_of_at_most_max_threads() -> None:
    b = choose_budget(64, 300.0, 8.0)
    assert b.workers >= 2 and b.threads <= MAX_THREADS
    assert b.workers * b.threads <= 64


@pytest.mark.parametrize("rates", [(None, None), (0.0, 5.0), (5.0, None)])
def test_unknown_rates_split_evenly(rates: tuple) -> None:
    assert choose_budget(4, *rates) == Budget(1, 2, 2, 4)


def test_user_sizes_win() -> None:
    b = choose_budget(16, 300.0, 8.0, workers=3, threads=5, loaders=7, slots=11)
    assert b == Budget(3, 5, 7, 11)


def test_gpu_one_worker_each_loaders_take_the_cores() -> None:
    b = choose_budget(16, 100.0, None, gpus=2)
    assert b.workers == 2 and b.threads == 1
    assert b.loaders == (16 - 1) // 2 - 1


def test_one_core_still_runs() -> None:
    assert choose_budget(1, 100.0, 10.0) == Budget(1, 1, 1, 3)


def test_combined_bound_is_harmonic() -> None:
    assert combined_bound(2, 100.0, 100.0) == pytest.approx(100.0)
