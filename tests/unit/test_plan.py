from gristmill.plan import Shard, batches, plan


def test_shards_cover_every_input_once_with_stable_ids():
    shards = plan(10, 4)
    assert shards == [Shard(0, 0, 4), Shard(1, 4, 8), Shard(2, 8, 10)]
    assert plan(10, 4) == shards
    assert [s.name for s in shards] == ["shard-000000", "shard-000001", "shard-000002"]
    assert plan(0, 4) == []


def test_batches_are_absolute_ranges_within_the_shard():
    assert batches(Shard(1, 4, 10), 4) == [(4, 8), (8, 10)]
    assert batches(Shard(0, 0, 3), 32) == [(0, 3)]
