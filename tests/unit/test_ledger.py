import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from gristmill import ledger
from gristmill.errors import SpecError
from gristmill.plan import Shard
from gristmill.sinks.hdf5 import build_view, open_view, write_shard


def test_commit_writes_file_then_marker_and_commits_a_shard_once(tmp_path):
    out = str(tmp_path)
    os.makedirs(tmp_path / "shards")
    shard = Shard(3, 30, 40)
    calls = []

    def write(path):
        calls.append(path)
        write_shard(path, ["a"], {"f": np.ones((1, 2), "f4")}, [])

    assert ledger.commit_shard(out, shard, write, {"shard": 3})
    with open(ledger.marker_path(out, shard)) as f:
        assert json.load(f) == {"shard": 3}
    assert not ledger.commit_shard(out, shard, write, {"shard": 3})
    assert len(calls) == 1
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard-000003.h5", "shard-000003.json"]


def test_a_failed_write_leaves_neither_file_nor_marker(tmp_path):
    out = str(tmp_path)
    os.makedirs(tmp_path / "shards")

    def write(path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        ledger.commit_shard(out, Shard(0, 0, 1), write, {})
    assert os.listdir(tmp_path / "shards") == []


def test_committed_ignores_markers_of_other_inputs(tmp_path):
    out = str(tmp_path)
    os.makedirs(tmp_path / "shards")
    shards = [Shard(0, 0, 2), Shard(1, 2, 4)]
    for s in shards:
        ledger.commit_shard(out, s, lambda p: Path(p).write_bytes(b"h5"),
                            {"inputs": f"h{s.id}", "spec": "S"})
    found = ledger.committed(out, shards, lambda s: "h0", "S")
    assert list(found) == [0]
    assert ledger.committed(out, shards, lambda s: f"h{s.id}", "other") == {}


def test_check_out_refuses_a_different_job_unless_overwrite(tmp_path):
    out = str(tmp_path / "o")
    assert ledger.check_out(out, {"a": 1}, False) is False
    ledger.init_out(out, json.dumps({"identity": {"a": 1}}), overwrite=False)
    assert ledger.check_out(out, {"a": 1}, False) is True
    with pytest.raises(SpecError, match="different job"):
        ledger.check_out(out, {"a": 2}, False)
    assert ledger.check_out(out, {"a": 2}, True) is False


def test_view_maps_rows_of_all_shards_in_order(tmp_path):
    out = tmp_path / "o"
    (out / "shards").mkdir(parents=True)
    a, b = str(out / "shards/a.h5"), str(out / "shards/b.h5")
    write_shard(a, ["x", "y"], {"f": np.arange(4, dtype="f4").reshape(2, 2)},
                [("bad.jpg", "decode", "truncated")])
    write_shard(b, ["z"], {"f": np.full((1, 2), 9, "f4")}, [])
    build_view(str(out), [a, b], ["f"], {"complete": True})
    with open_view(str(out)) as r:
        assert r.names == ["x", "y", "z"]
        np.testing.assert_array_equal(r["f"][()], [[0, 1], [2, 3], [9, 9]])
        assert r.errors == [("bad.jpg", "decode", "truncated")]
        assert r["f"].is_virtual
    with h5py.File(out / "features.h5") as f:
        assert f["names"].dtype.kind == "O"
