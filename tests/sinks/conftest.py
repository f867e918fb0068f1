"""The sinks' shared fixtures (defined in ``sinkkit``, beside the helpers the tests import)."""

from s3server import s3_server  # noqa: F401  (the session fixture)
from sinkkit import bucket, images, s3_endpoint  # noqa: F401
