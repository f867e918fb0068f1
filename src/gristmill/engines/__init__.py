"""Engines place work; the per-worker code (``runner.ShardRunner``) is the same on every engine."""
