"""Sinks: how a shard's results are stored and how the committed shards are read as one."""
