"""The sink contract without a model: shards written through ``ledger.commit_parts`` with carried
columns, multi-dimensional outputs, an all-error shard and a retry shard, read back by
``gristmill.open`` the same way in every format."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import gristmill
from gristmill import ledger
from gristmill.plan import Shard
from gristmill.sinks.base import get_sink
from gristmill.store import Store

ROWS = {  # shard -> (names, errors as (index, name, stage, message))
    0: (["a", "b"], [(2, "c", "decode", "truncated")]),
    1: ([], [(3, "d", "read", "missing")]),  # nothing readable: no data file in parquet/npy
}


def _commit(out, fmt, shard, names, errors, columns, retried=()):
    sink = get_sink(fmt)
    value = {"vec": np.arange(len(names) * 3, dtype="f4").reshape(-1, 3) + shard.id,
             "map": np.ones((len(names), 2, 2), "f4") * shard.id}
    outputs = {k: v for k, v in value.items() if len(names)}
    parts = sink.parts(shard.name, names, outputs, [e[1:] for e in errors], columns)
    marker = {"files": list(parts), "error_rows": errors, "retried": list(retried)}
    assert ledger.commit_parts(Store(str(out)), shard, parts, marker)
    assert not ledger.commit_parts(Store(str(out)), shard, parts, marker)  # committed once


@pytest.mark.parametrize("fmt", ["hdf5", "parquet", "npy"])
def test_every_format_reads_back_columns_shapes_and_superseded_errors(tmp_path, fmt):
    out = tmp_path / fmt
    (out / "shards").mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({"spec": {"format": fmt, "outputs": ["vec", "map"]}}))
    for sid, (names, errors) in ROWS.items():
        cols = {"caption": [f"cap {n}" for n in names], "width": [7] * len(names)} if names else {}
        _commit(out, fmt, Shard(sid, 2 * sid, 2 * sid + 2), names, errors, cols)
    # a retry shard covering c and d: c is now readable, d fails again
    _commit(out, fmt, Shard(2, 4, 6, retry=True), ["c"], [(5, "d", "read", "still missing")],
            {"caption": ["cap c"], "width": [9]}, retried=["c", "d"])
    sink = get_sink(fmt)
    shards = [(f"shard-{i:06d}", json.loads((out / f"shards/shard-{i:06d}.json").read_text()))
              for i in range(3)]
    sink.refresh_view(Store(str(out)), shards, ["vec", "map"], {"complete": True})
    with gristmill.open(str(out)) as r:
        assert r.names == ["a", "b", "c"]
        assert r.errors == [("d", "read", "still missing")]
        assert r.complete
        np.testing.assert_array_equal(np.asarray(r["vec"][:]),
                                      [[0, 1, 2], [3, 4, 5], [2, 3, 4]])
        assert np.asarray(r["map"][:]).shape == (3, 2, 2)
        assert list(r.columns["caption"]) == ["cap a", "cap b", "cap c"]
        assert list(r.columns["width"]) == [7, 7, 9]
    if fmt != "hdf5":
        errors = pq.read_table(out / "errors.parquet").to_pylist()
        assert errors == [{"name": "d", "stage": "read", "message": "still missing"}]
        assert not (out / ("parquet" if fmt == "parquet" else "metadata")
                    / "shard-000001.parquet").exists()


def test_parquet_records_the_row_shape_of_multi_dimensional_outputs(tmp_path):
    parts = get_sink("parquet").parts("shard-000000", ["a"], {"map": np.ones((1, 2, 3), "f4")},
                                      [], {})
    (rel, write), = parts.items()
    assert rel == "parquet/shard-000000.parquet"
    write(str(tmp_path / "s.parquet"))
    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("map").type) == "fixed_size_list<element: float>[6]"
    assert json.loads(table.schema.metadata[b"gristmill"])["shapes"] == {"map": [2, 3]}


def test_a_carried_column_may_not_shadow_an_output(tmp_path):
    with pytest.raises(ValueError, match="carried column 'vec'"):
        get_sink("parquet").parts("shard-000000", ["a"], {"vec": np.ones((1, 3), "f4")}, [],
                                  {"vec": ["x"]})
