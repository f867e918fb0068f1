"""Carried metadata columns in HDF5: typed per shard, merged row-aligned in features.h5."""

from __future__ import annotations

import math

import numpy as np

import gristmill
from gristmill.sinks.hdf5 import build_view, column_array, write_shard


def test_column_types():
    assert column_array([1, 2]).dtype == np.int64
    assert column_array([True, False]).dtype == bool
    floats = column_array([1, None, 2.5])
    assert floats.dtype == np.float64 and math.isnan(floats[1])
    assert list(column_array(["a", None, 3])) == ["a", "", "3"]


def test_columns_reach_the_view_row_aligned(tmp_path):
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    (tmp_path / "shards").mkdir()
    one, two = tmp_path / "shards/a.h5", tmp_path / "shards/b.h5"
    write_shard(str(one), ["x", "y"], {"f": feats[:2]}, [("bad", "read", "gone")],
                {"caption": ["cx", "cy"], "width": [10, 20]})
    write_shard(str(two), ["z"], {"f": feats[2:]}, [], {"caption": ["cz ü"], "width": [None]})
    build_view(str(tmp_path), [str(one), str(two)], ["f"], {})
    with gristmill.open(str(tmp_path)) as result:
        assert result.names == ["x", "y", "z"]
        assert list(result.columns["caption"]) == ["cx", "cy", "cz ü"]
        width = result.columns["width"]
        assert width[:2].tolist() == [10, 20] and math.isnan(width[2])
        assert "columns" not in result.outputs
        np.testing.assert_array_equal(result["f"][()], feats)
