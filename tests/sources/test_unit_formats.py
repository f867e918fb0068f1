"""Tar and Parquet jobs (units expanded by workers) give the loose files' rows in every format:
the same names in container order, the same values (<= 1e-6), the same kept columns."""

from __future__ import annotations

import pytest
from faultkit import run
from srckit import JOB

import gristmill

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["hdf5", "parquet", "npy"])
def test_every_format_holds_the_loose_rows(fmt, wds_dir, parquet_dir, photo_samples, loose_run,
                                           tmp_path):
    import numpy as np

    keys = [s["key"] for s in photo_samples]
    for source in (str(wds_dir / "shard-{00000..00002}.tar"), str(parquet_dir / "bytes")):
        out = tmp_path / ("tars" if source.endswith(".tar") else "table")
        done = run(source, "-o", str(out), *JOB, "--format", fmt, "--keep-columns", "caption")
        assert done.returncode == 0, done.stderr
        with gristmill.open(str(out)) as result:
            assert list(result.names) == keys  # container order, each sample once
            values = np.asarray(result["output"][:])
            captions = list(result.columns["caption"])
        for name, value in zip(keys, values, strict=True):
            np.testing.assert_allclose(value, loose_run[name], rtol=0, atol=1e-6, err_msg=name)
        assert captions == [s["caption"] for s in photo_samples]
