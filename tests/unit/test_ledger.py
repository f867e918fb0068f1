import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from gristmill import ledger, outdir
from gristmill import marker as markers
from gristmill.errors import SpecError
from gristmill.marker import Marker, marker_name
from gristmill.plan import Shard
from gristmill.sinks.hdf5 import build_view, open_view, write_shard
from gristmill.sources import InputList
from gristmill.store import Store


def h5_marker(shard, **fields):
    return Marker(shard.id, shard.start, shard.stop, ok=fields.pop("ok", 1), errors=0,
                  inputs=fields.pop("inputs", "h"), spec=fields.pop("spec", "S"),
                  files=(f"shards/{shard.name}.h5",), error_rows=(), **fields)


def test_commit_writes_file_then_marker_and_commits_a_shard_once(tmp_path):
    store = Store(str(tmp_path))
    shard = Shard(3, 30, 40)
    calls = []

    def write(path):
        calls.append(path)
        write_shard(path, ["a"], {"f": np.ones((1, 2), "f4")}, [])

    marker = h5_marker(shard)
    assert ledger.commit_parts(store, {"shards/shard-000003.h5": write}, marker)
    with open(tmp_path / marker_name(3)) as f:
        assert json.load(f)["shard"] == 3
    assert markers.read(store, 3) == marker  # read back as written
    assert not ledger.commit_parts(store, {"shards/shard-000003.h5": write}, marker)
    assert len(calls) == 1
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard-000003.h5", "shard-000003.json"]


def test_a_failed_write_leaves_neither_file_nor_marker(tmp_path):
    os.makedirs(tmp_path / "shards")

    def write(path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        ledger.commit_parts(Store(str(tmp_path)), {"shards/shard-000000.h5": write},
                            h5_marker(Shard(0, 0, 1)))
    assert os.listdir(tmp_path / "shards") == []


def test_committed_ignores_markers_of_other_inputs_and_of_missing_files(tmp_path):
    store = Store(str(tmp_path))
    inputs = InputList.from_names(b"/r", [b"a", b"b", b"c", b"d", b"e", b"f"])
    shards = [Shard(0, 0, 2), Shard(1, 2, 4), Shard(2, 4, 6)]
    for s in shards:
        digest = inputs.digest(s.start, s.stop) if s.id != 1 else "another job's"
        ledger.commit_parts(store, {f"shards/{s.name}.h5": lambda p: Path(p).write_bytes(b"h5")},
                            h5_marker(s, inputs=digest))
    os.unlink(tmp_path / "shards/shard-000002.h5")  # removed by hand: no longer a shard
    assert list(outdir.committed(store, shards, inputs, "S")) == [0]
    assert outdir.committed(store, shards, inputs, "other") == {}


def test_old_markers_read_as_hdf5_shards_with_their_rows_in_the_file():
    old = Marker.from_bytes(b'{"ok": 9, "errors": 1, "inputs": "h", "spec": "S"}', 4)
    assert (old.shard, old.files, old.error_rows) == (4, ("shards/shard-000004.h5",), None)
    clean = Marker.from_bytes(b'{"ok": 9, "errors": 0, "inputs": "h", "spec": "S"}', 4)
    assert clean.error_rows == ()
    assert Marker.from_bytes(b"{not json", 4) is None


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
