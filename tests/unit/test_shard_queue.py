from gristmill.engines.messages import ShardFailed, ShardRetried, ShardTask
from gristmill.engines.shards import ShardQueue
from gristmill.plan import plan


def test_retries_go_first_and_are_given_up_after_max_attempts():
    events = []
    q = ShardQueue(plan(6, 2), max_attempts=2, on_event=events.append)
    first = q.pop()
    q.retry(first, "boom")
    assert len(q) == 3 and q.pop() == ShardTask(first.shard, attempt=2)
    q.retry(ShardTask(first.shard, 2), "boom again")
    assert q.failed == {0: "boom again"}
    assert events == [ShardRetried(0, 2, 2, "boom"), ShardFailed(0, "boom again")]
    assert [t.shard.id for t in q.pending] == [1, 2]


def test_a_lost_worker_charges_only_the_shard_it_was_computing():
    events = []
    q = ShardQueue(plan(8, 2), max_attempts=3, on_event=events.append)
    held = [q.pop(), q.pop()]
    assert q.give_back(held, "worker died") == "shard-000000 re-queued (attempt 2 of 3)"
    assert events == [ShardRetried(0, 2, 3, "worker died")]
    assert [t.shard.id for t in q.pending] == [0, 1, 2, 3]
    assert q.attempts == {0: 1} and q.pending[0].attempt == 2 and q.pending[1].attempt == 1
    assert q.give_back([], "nothing held") == ""
    assert len(q) == 4
