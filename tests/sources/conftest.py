"""The sources' shared fixtures (defined in ``srckit``, beside the helpers the tests import)."""

from srckit import loose_run, parquet_dir, photo_samples, wds_dir  # noqa: F401
