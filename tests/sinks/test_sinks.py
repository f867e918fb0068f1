"""The sink contract over every registered format, without a model: shards written through
``ledger.commit_parts`` with carried columns, multi-dimensional outputs, an all-error shard and a
retry shard, read back through ``outdir`` and ``gristmill.open`` the same way in every format."""

from __future__ import annotations

import json

import numpy as np
import outkit
import pyarrow.parquet as pq
import pytest

import gristmill
from gristmill import increment, ledger, outdir, sinks
from gristmill.errors import SpecError
from gristmill.marker import Marker
from gristmill.sinks import rules
from gristmill.sources import display_name

FORMATS = sinks.FORMATS  # every registered sink goes through the same contract


def _commit(state, shard_id, errors, columns):
    """Shard ``shard_id`` of ``state`` through its sink and the ledger: every input ok but
    ``errors`` (name -> (stage, message)), carried ``columns`` for the ok rows."""
    shard = state.shards[shard_id]
    names = [display_name(r) for r in state.inputs.raw_range(shard.start, shard.stop)]
    ok = [n for n in names if n not in errors]
    rows = [(shard.start + names.index(n), n, *errors[n]) for n in names if n in errors]
    value = {"vec": np.arange(len(ok) * 3, dtype="f4").reshape(-1, 3) + shard.id,
             "map": np.ones((len(ok), 2, 2), "f4") * shard.id}
    outputs = {k: v for k, v in value.items() if ok}
    parts = state.sink.parts(shard.name, ok, outputs, [r[1:] for r in rows], columns)
    marker = Marker(shard.id, shard.start, shard.stop, ok=len(ok), errors=len(rows),
                    inputs=state.inputs.digest(shard.start, shard.stop),
                    spec=state.spec.identity_hash(), format=state.spec.format,
                    files=tuple(parts), error_rows=tuple(rows),
                    shapes={k: v.shape[1:] for k, v in outputs.items()},
                    retried=tuple(names) if shard.retry else ())
    assert ledger.commit_parts(state.store, parts, marker)
    assert not ledger.commit_parts(state.store, parts, marker)  # committed once


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_columns_shapes_and_superseded_errors(tmp_path, fmt):
    out = tmp_path / fmt
    state = outkit.make_job(out, ["a", "b", "c", "d"], shard_size=2, fmt=fmt,
                            outputs=("vec", "map"))
    _commit(state, 0, {}, {"caption": ["cap a", "cap b"], "width": [7, 7]})
    # nothing readable: no data file in parquet/npy, only the marker
    _commit(state, 1, {"c": ("decode", "truncated"), "d": ("read", "missing")}, {})
    # a retry shard covering c and d: c is now readable, d fails again
    state = state.refreshed()
    retry = increment.errors_to_retry(state)
    assert retry.raw_range(0, len(retry)) == [b"c", b"d"]
    state = outdir.save(state.grown("retry", state.inputs.concat(retry)), "", grown=True)
    _commit(state, 2, {"d": ("read", "still missing")}, {"caption": ["cap c"], "width": [9]})
    state = state.refreshed()
    assert state.complete and [m.shard for m in state.committed] == [0, 1, 2]
    assert [r[1:] for r in state.error_rows()] == [("d", "read", "still missing")]
    state.sink.refresh_view(state.store, state.committed, ["vec", "map"], {"complete": True})
    with gristmill.open(str(out)) as r:
        assert r.names == ["a", "b", "c"]
        assert r.errors == [("d", "read", "still missing")]
        assert r.complete
        np.testing.assert_array_equal(np.asarray(r["vec"][:]),
                                      [[0, 1, 2], [3, 4, 5], [2, 3, 4]])
        assert np.asarray(r["map"][:]).shape == (3, 2, 2)
        assert list(r.columns["caption"]) == ["cap a", "cap b", "cap c"]
        assert list(r.columns["width"]) == [7, 7, 9]
    for view in state.sink.view_files:
        assert (out / view).is_file()
    if fmt != "hdf5":
        errors = pq.read_table(out / "errors.parquet").to_pylist()
        assert errors == [{"name": "d", "stage": "read", "message": "still missing"}]
        assert not (out / ("parquet" if fmt == "parquet" else "metadata")
                    / "shard-000001.parquet").exists()
    # every file a marker lists is the sink's: under one of its folders
    folders = state.sink.folders(state.spec.outputs)
    assert all(f.split("/")[0] in folders for m in state.committed for f in m.files)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_refuses_names_it_cannot_store_in_one_line(fmt):
    with pytest.raises(SpecError, match=f"--format {fmt}") as caught:
        rules.check(fmt, ("name",), ())
    assert "\n" not in str(caught.value)
    with pytest.raises(SpecError, match="--keep-columns vec clashes"):
        rules.check(fmt, ("vec",), ("vec",))
    rules.check(fmt, ("vec", "map"), ("caption",))  # ordinary names pass


def test_parquet_records_the_row_shape_of_multi_dimensional_outputs(tmp_path):
    parts = sinks.get("parquet").parts("shard-000000", ["a"], {"map": np.ones((1, 2, 3), "f4")},
                                      [], {})
    (rel, write), = parts.items()
    assert rel == "parquet/shard-000000.parquet"
    write(str(tmp_path / "s.parquet"))
    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("map").type) == "fixed_size_list<element: float>[6]"
    assert json.loads(table.schema.metadata[b"gristmill"])["shapes"] == {"map": [2, 3]}


def test_a_carried_column_may_not_shadow_an_output(tmp_path):
    with pytest.raises(ValueError, match="carried column 'vec'"):
        sinks.get("parquet").parts("shard-000000", ["a"], {"vec": np.ones((1, 3), "f4")}, [],
                                  {"vec": ["x"]})
