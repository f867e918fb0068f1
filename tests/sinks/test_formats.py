"""The same job written as hdf5, parquet and npy: equal names and values, errors kept in each,
and each format read back by the tools its users read it with (pandas, DuckDB, pyarrow.dataset,
embedding-reader, autofaiss)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sinkkit import JOB, exactly_once, gristmill

import gristmill as gm
from gristmill.cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outs(images, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fmt-outs")
    found = {}
    for fmt in ("hdf5", "parquet", "npy"):
        out = root / fmt
        gristmill(str(images[0]), "-o", str(out), "--format", fmt, *JOB)
        found[fmt] = out
    return found


def _by_name(out: Path) -> tuple[dict[str, np.ndarray], list]:
    with gm.open(str(out)) as r:
        exactly_once_rows = dict(zip(r.names, np.asarray(r["output"][:]), strict=True))
        return exactly_once_rows, sorted(r.errors)


def test_three_formats_give_equal_names_values_and_errors(outs, images):
    want, want_errors = _by_name(outs["hdf5"])
    assert len(want) == 40 and [e[0] for e in want_errors] == ["f000/broken.jpg"]
    for fmt in ("parquet", "npy"):
        got, errors = _by_name(outs[fmt])
        assert sorted(got) == sorted(want), fmt
        assert max(float(np.abs(got[k] - want[k]).max()) for k in want) == 0.0, fmt
        assert errors == want_errors, fmt
        with gm.open(str(outs[fmt])) as r:
            exactly_once(r, images[1])
            assert r.complete and r["output"].dtype == np.float32


def test_parquet_is_one_table_for_pandas_duckdb_and_pyarrow(outs):
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    want, _ = _by_name(outs["hdf5"])
    folder = outs["parquet"] / "parquet"
    assert len(list(folder.glob("*.parquet"))) == 3  # 41 inputs in shards of 16
    frame = pd.read_parquet(folder)
    assert sorted(frame["name"]) == sorted(want)
    for name, row in zip(frame["name"], frame["output"], strict=True):
        np.testing.assert_array_equal(np.asarray(row, np.float32), want[name])
    table = ds.dataset(str(folder), format="parquet").to_table()
    assert table.num_rows == 40 and str(table.schema.field("output").type) == \
        "fixed_size_list<element: float>[8]"
    con = duckdb.connect()
    rows = con.execute(f"SELECT name, output FROM '{folder}/*.parquet' ORDER BY name").fetchall()
    assert [r[0] for r in rows] == sorted(want)
    np.testing.assert_array_equal(np.array([r[1] for r in rows], np.float32),
                                  np.stack([want[n] for n in sorted(want)]))
    errors = con.execute(f"SELECT name, stage FROM '{outs['parquet']}/errors.parquet'").fetchall()
    assert [e[0] for e in errors] == ["f000/broken.jpg"]


def test_npy_is_read_by_embedding_reader_and_indexed_by_autofaiss(outs):
    from embedding_reader import EmbeddingReader

    want, _ = _by_name(outs["hdf5"])
    out = outs["npy"]
    reader = EmbeddingReader(str(out / "output"), file_format="parquet_npy",
                             metadata_folder=str(out / "metadata"), meta_columns=["name"])
    assert reader.count == 40 and reader.dimension == 8
    seen = 0
    for embeddings, meta in reader(batch_size=7, show_progress=False):
        for vector, name in zip(embeddings, meta["name"], strict=True):
            np.testing.assert_array_equal(vector, want[name])
            seen += 1
    assert seen == 40
    pytest.importorskip("faiss")
    from autofaiss import build_index

    # in memory: saving its metrics as JSON fails on numpy 2 floats (autofaiss' own bug)
    index, _ = build_index(embeddings=str(out / "output"), save_on_disk=False,
                           max_index_memory_usage="100MB", current_memory_available="500MB",
                           metric_type="l2", verbose=40, nb_cores=1)
    assert index.ntotal == 40
    order = sorted(want)  # rows in file order: shards in id order, names sorted within
    _, found = index.search(np.stack([want[order[5]]]), 1)
    assert int(found[0][0]) == 5


def test_inspect_describes_every_format(outs, capsys):
    for fmt, out in outs.items():
        assert cli_main(["inspect", str(out)]) == 0
        text = capsys.readouterr().out
        assert f"{fmt}, 40 items, 1 errors, complete=True" in text, text
        assert "output: (40, 8) float32" in text
    job = json.loads((outs["npy"] / "job.json").read_text())
    assert job["identity"]["format"] == "npy" and "format" not in json.loads(
        (outs["hdf5"] / "job.json").read_text())["identity"]
