"""Parquet tables: bytes, Hugging Face struct and path columns; keys; kept columns; bad tables."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faultkit import run
from srckit import JOB, assert_same_features, by_name, columns_by_name

import gristmill
from gristmill.errors import SpecError
from gristmill.plan import plan_segments
from gristmill.sources import Kind, expand, list_inputs


def test_listing_reads_footers_only_and_workers_read_the_key_column(parquet_dir, photo_samples,
                                                                     monkeypatch):
    asked = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        asked.append(tuple(columns or ()))
        return real(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read rows"))
    inputs = list_inputs([str(parquet_dir / "bytes")])
    assert asked == []  # footers only: one unit per row group, weighing its rows
    assert set(inputs.kind.tolist()) == {Kind.TABLE_PART}
    assert inputs.weights().tolist() == [5, 5, 4, 5, 5, 4]
    assert inputs.start.tolist() == [0, 1, 2, 0, 1, 2]  # row group
    assert inputs.breaks() == [3]
    assert inputs.reader_options["image_column"] == "jpg"
    items = expand(inputs, 0, len(inputs), "")
    assert asked == [("key",)] * 6
    assert items.names == [s["key"].encode() for s in photo_samples]
    assert [(r.start, r.size) for r in items.refs[:6]] == [(0, 0), (0, 1), (0, 2), (0, 3),
                                                           (0, 4), (1, 0)]
    # a shard is whole row groups, a large table cut between them
    assert [(s.start, s.stop, s.items) for s in plan_segments([(0, "list")], len(inputs), 12,
                                                              inputs.breaks(), inputs.weight)
            ] == [(0, 2, 10), (2, 3, 4), (3, 5, 10), (5, 6, 4)]


def test_names_without_a_key_column_are_file_and_row(parquet_dir):
    table = pq.read_table(parquet_dir / "hf.parquet").drop_columns(["key"])
    pq.write_table(table, parquet_dir.parent / "nokey.parquet", row_group_size=7)
    inputs = list_inputs([str(parquet_dir.parent / "nokey.parquet")])
    items = expand(inputs, 0, len(inputs), "")
    assert items.names[0] == b"nokey.parquet:0" and items.names[27] == b"nokey.parquet:27"
    later = expand(inputs, 2, 3, "")  # a part knows its rows' numbers in the whole table
    assert later.names[0] == b"nokey.parquet:14"


@pytest.mark.parametrize("options, message", [
    ({"image_column": "pixels"}, "--image-column pixels: table .* has no such column"),
    ({"keep_columns": ("caption", "nope")}, "--keep-columns nope"),
    ({"key_column": "nope"}, "--key-column nope"),
])
def test_unknown_columns_are_one_line(parquet_dir, options, message):
    with pytest.raises(SpecError, match=message):
        list_inputs([str(parquet_dir / "hf.parquet")], options)


@pytest.mark.slow
@pytest.mark.parametrize("source, extra", [
    ("bytes", ()),
    ("hf.parquet", ()),
    ("paths.parquet", ("--path-column", "path")),
])
def test_table_run_equals_loose_files(parquet_dir, photo_samples, loose_run, tmp_path, source,
                                      extra):
    out = tmp_path / "out"
    done = run(str(parquet_dir / source), "-o", str(out), *JOB, *extra,
               "--keep-columns", "caption,width,url")
    assert done.returncode == 0, done.stderr
    assert_same_features(out, loose_run)
    expected = {s["key"]: s for s in photo_samples}
    with gristmill.open(str(out)) as result:
        assert result.names == [s["key"] for s in photo_samples]  # table order
        assert result.columns["width"].dtype.kind == "i"
    for name, cols in columns_by_name(out).items():
        assert (cols["caption"], int(cols["width"]), cols["url"]) == (
            expected[name]["caption"], expected[name]["width"], expected[name]["url"])


@pytest.mark.slow
def test_null_and_corrupt_cells_are_error_rows_and_bad_tables_exit_2(photo_samples, tmp_path):
    cells = [s["jpg"] for s in photo_samples[:3]] + [None, b"not an image", b""]
    keys = ["a", "b", "c", "null", "corrupt", "empty"]
    pq.write_table(pa.table({"key": keys, "img": pa.array(cells, pa.binary()),
                             "caption": [f"c-{k}" for k in keys]}), tmp_path / "t.parquet")
    out = tmp_path / "out"
    done = run(str(tmp_path / "t.parquet"), "-o", str(out), *JOB, "--keep-columns", "caption")
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        assert result.names == ["a", "b", "c"]
        assert list(result.columns["caption"]) == ["c-a", "c-b", "c-c"]
        errors = {n: (stage, msg) for n, stage, msg in result.errors}
    assert errors["null"] == ("read", "column 'img' is null")
    assert errors["empty"] == ("read", "column 'img' is null")
    assert errors["corrupt"][0] == "decode"
    assert len(by_name(out)) == 3
    bad = run(str(tmp_path / "t.parquet"), "-o", str(tmp_path / "o2"), *JOB,
              "--image-column", "pixels")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--image-column pixels" in bad.stderr
    pq.write_table(pa.table({"key": pa.array([], pa.string()),
                             "jpg": pa.array([], pa.binary())}), tmp_path / "e.parquet")
    empty = run(str(tmp_path / "e.parquet"), "-o", str(tmp_path / "o3"), *JOB)
    assert empty.returncode == 2 and "has no rows" in empty.stderr
    assert empty.stderr.count("\n") == 1


def test_a_key_in_two_tables_is_reported_naming_both(parquet_dir, tmp_path):
    import shutil

    shutil.copy(parquet_dir / "hf.parquet", tmp_path / "a.parquet")
    shutil.copy(parquet_dir / "hf.parquet", tmp_path / "b.parquet")
    out = tmp_path / "out"
    done = run(str(tmp_path), "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    from gristmill.duplicates import find
    from gristmill.outdir import reopen

    with gristmill.open(str(out)) as result:
        assert len(result.names) == 56
    found = find(reopen(str(out)))
    assert (found.keys, found.rows) == (28, 56)
    first = found.first[0]
    assert first.key == "g0/astronaut" and first.count == 2
    assert [c.rsplit("/", 1)[1] for c in first.containers] == ["a.parquet", "b.parquet"]
