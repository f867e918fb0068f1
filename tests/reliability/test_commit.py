"""Exactly-once output at the ledger level: a shard computed twice is committed once, a killed
commit leaves nothing a reader can see, and a rerun sweeps the temporary files."""

from __future__ import annotations

import json
import os

import pytest

from gristmill import ledger, outdir
from gristmill.marker import Marker, marker_name
from gristmill.plan import Shard
from gristmill.sources import InputList


def _out(tmp_path) -> str:
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, ledger.SHARDS_DIR))
    return out


def _h5(shard: Shard) -> str:
    return f"{ledger.SHARDS_DIR}/{shard.name}.h5"


def _marker(shard: Shard, n: int = 0, **fields) -> Marker:
    return Marker(shard.id, shard.start, shard.stop, ok=n, errors=0, inputs="d", spec="spec",
                  files=(_h5(shard),), error_rows=(), **fields)


def test_second_commit_of_a_shard_is_discarded(tmp_path):
    out, shard = _out(tmp_path), Shard(3, 30, 40)

    def write(content: bytes):
        def to(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(content)
        return to

    store = ledger.Store(out)
    assert ledger.commit_parts(store, {_h5(shard): write(b"first")}, _marker(shard, 1))
    assert not ledger.commit_parts(store, {_h5(shard): write(b"second")}, _marker(shard, 2))
    with open(store.path(_h5(shard)), "rb") as f:
        assert f.read() == b"first"
    with open(store.path(marker_name(shard.id))) as f:
        assert json.load(f)["ok"] == 1
    assert sorted(os.listdir(os.path.join(out, ledger.SHARDS_DIR))) == [
        "shard-000003.h5", "shard-000003.json"]


def test_a_shard_without_marker_is_not_committed(tmp_path):
    """A worker killed between rename and marker: the file is there, the shard is not."""
    out, shard = _out(tmp_path), Shard(0, 0, 10)
    open(os.path.join(out, _h5(shard)), "wb").close()
    inputs = InputList.from_names(b"/r", [f"{i}".encode() for i in range(10)])
    assert outdir.committed(ledger.Store(out), [shard], inputs, "spec") == {}


def test_failed_write_leaves_no_file_and_no_marker(tmp_path):
    out, shard = _out(tmp_path), Shard(1, 10, 20)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        ledger.commit_parts(ledger.Store(out), {_h5(shard): write}, _marker(shard))
    assert os.listdir(os.path.join(out, ledger.SHARDS_DIR)) == []


def test_stale_temporary_files_are_swept(tmp_path):
    out = _out(tmp_path)
    for name in ("shards/shard-000001.h5.123.tmp", "features.h5.77.tmp", "inputs.npz.tmp"):
        open(os.path.join(out, name), "wb").close()
    open(os.path.join(out, "notes.tmp"), "wb").close()  # not ours: kept
    ledger.remove_stale_temps(out)
    assert sorted(os.listdir(out)) == ["notes.tmp", "shards"]
    assert os.listdir(os.path.join(out, "shards")) == []


def test_failed_marker_write_removes_the_shard_files(tmp_path, monkeypatch):
    """The disk fills between the shard's files and its marker: no orphan file stays."""
    out, shard = _out(tmp_path), Shard(2, 20, 30)
    store = ledger.Store(out)
    put = store.put_bytes

    def full(rel: str, data: bytes) -> None:
        if rel == marker_name(shard.id):
            raise OSError(28, "No space left on device")
        put(rel, data)

    monkeypatch.setattr(store, "put_bytes", full)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"rows")

    parts = {_h5(shard): write, f"meta/{shard.name}.parquet": write}
    with pytest.raises(OSError):
        ledger.commit_parts(store, parts, _marker(shard))
    assert os.listdir(os.path.join(out, ledger.SHARDS_DIR)) == []
    assert os.listdir(os.path.join(out, "meta")) == []
    monkeypatch.setattr(store, "put_bytes", put)  # the disk has room again: the retry commits
    assert ledger.commit_parts(store, parts, _marker(shard, 1))
    assert sorted(os.listdir(os.path.join(out, ledger.SHARDS_DIR))) == [
        "shard-000002.h5", "shard-000002.json"]
