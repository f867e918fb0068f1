"""OUT on object storage (an S3 server started by the tests on 127.0.0.1): shards are final
objects then a marker object; a killed driver leaves nothing readable as committed without its
marker, and the same command then completes with each input exactly once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from faultkit import make_images, start
from sinkkit import TINY, exactly_once, gristmill, wait_then_kill

import gristmill as gm
from gristmill import ledger, outdir, sinks
from gristmill import marker as markers
from gristmill.marker import Marker
from gristmill.sources import InputList
from gristmill.spec import JobSpec

pytestmark = pytest.mark.slow

SLOW = ["--shard-size", "8", "--batch-size", "8", "--workers", "1", "--loaders", "1",
        "--threads", "1", *TINY, "--model", "tinynet:slow"]


def test_a_shard_is_invisible_until_its_marker_object(bucket, tmp_path):
    out = f"s3://{bucket}/unit"
    state = outdir.build(out, JobSpec(sources=("x",), out=out, format="npy", outputs=("vec",)),
                         InputList.from_names(b"/r", [b"a", b"b"]))
    store = state.store
    store.put_bytes("job.json", json.dumps({"spec": json.loads(state.spec.to_json())}).encode())
    outdir.save(state, str(tmp_path), grown=False)
    sink = sinks.get("npy")
    parts = sink.parts("shard-000000", ["a", "b"], {"vec": np.ones((2, 3), "f4")}, [], {})
    marker = Marker(0, 0, 2, ok=2, errors=0, inputs=state.inputs.digest(0, 2),
                    spec=state.spec.identity_hash(), format="npy", files=tuple(parts),
                    error_rows=())

    def fail(path: str) -> None:
        raise OSError(5, "connection lost")

    broken = dict(parts)
    broken["metadata/shard-000000.parquet"] = fail  # the upload dies after the array object
    with pytest.raises(OSError):
        ledger.commit_parts(store, broken, marker)
    assert not store.exists("vec/shard-000000.npy")  # the failed commit took its object back
    # a commit killed at that point cannot clean up: its whole object stays, but is no shard
    array = "vec/shard-000000.npy"
    assert store.publish(array, parts[array], abort=lambda: False)
    assert store.exists(array)
    assert markers.read_all(store) == [] and state.refreshed().done == {}
    with gm.open(out) as r:
        assert r.names == [] and len(r["vec"]) == 0
    assert ledger.commit_parts(store, parts, marker)
    with gm.open(out) as r:
        assert r.names == ["a", "b"]


def test_driver_killed_on_object_storage_then_same_command_completes(bucket, tmp_path):
    import s3fs

    root = tmp_path / "photos"
    names = make_images(root, 120, per_folder=40)
    out = f"s3://{bucket}/run1"
    args = (str(root), "-o", out, "--format", "parquet", *SLOW)
    fs = s3fs.S3FileSystem()

    def markers() -> list[str]:
        fs.invalidate_cache()
        return [p for p in fs.find(f"{bucket}/run1/shards") if p.endswith(".json")]

    job = start(*args)
    wait_then_kill(job, lambda: len(markers()) >= 2, timeout=240)
    committed = outdir.reopen(out).committed
    assert 2 <= len(committed) < 15, "the kill came after the whole job"
    objects = fs.find(f"{bucket}/run1/parquet")
    marked = {f"{bucket}/run1/{f}" for m in committed for f in m.files}
    with gm.open(out) as r:  # exactly the marked shards, even if more objects were uploaded
        assert len(r.names) == sum(m.ok for m in committed)
        assert set(r.names) == {n for i, n in enumerate(names)
                                if any(m.start <= i < m.stop for m in committed)}
    assert marked <= set(objects)
    gristmill(*args, timeout=300)
    with gm.open(out) as r:
        exactly_once(r, names)
        assert r.complete and r["output"].shape == (120, 8)
    assert not fs.find(f"{bucket}/run1/.cache")
