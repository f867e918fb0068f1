"""The sinks' shared fixtures (defined in ``sinkkit``, beside the helpers the tests import)."""

from sinkkit import bucket, images, s3_endpoint  # noqa: F401
