"""Loading: loader processes decode images into pre-allocated shared-memory batch slots.

``ring`` holds the slots, ``process`` the loader process loop, ``messages`` what travels between
them: slot ids and item indices, never pixels; ``launch`` how a spawned loader starts (dying with
its parent before it reads its job). For training: ``training`` (``gristmill.Loader``),
``pool`` (its processes and shutdown), ``order`` (shuffle / DDP shards), ``augment``, ``labels``.
"""
