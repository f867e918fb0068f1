"""Text files as sources (``--modality text``): lines listed by number, read back by range."""

from __future__ import annotations

import pytest

from gristmill.errors import SpecError
from gristmill.sources import Kind, display_name, expand, list_inputs
from gristmill.sources.lines import GAP_BYTES
from gristmill.sources.reader import BatchReader
from gristmill.transforms import ItemError

TEXT = {"modality": "text"}


def captions(inputs) -> list[str | None]:
    opened = BatchReader(inputs.reader_options).open(inputs.refs(0, len(inputs)))
    return [None if isinstance(o, ItemError) else o.data.decode() for o in opened]


def test_lines_are_named_by_number_blank_lines_skipped(tmp_path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b"a cat\n\n  \r\nTwo dogs \r\n\tindented\nlast without newline")
    inputs = list_inputs([str(path)], TEXT)
    assert [display_name(inputs.raw(i)) for i in range(len(inputs))] == ["1", "4", "5", "6"]
    assert set(inputs.kind.tolist()) == {Kind.LINE}
    # a CRLF ending is not part of the caption; the caption's own spaces are
    assert captions(inputs) == ["a cat", "Two dogs ", "\tindented", "last without newline"]


def test_several_files_and_globs(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("\nz\n")
    inputs = list_inputs([str(tmp_path / "a" / "*.txt"), str(tmp_path / "b.txt")], TEXT)
    assert [display_name(inputs.raw(i)) for i in range(len(inputs))] == [
        "a/one.txt:1", "a/one.txt:2", "b.txt:2"]
    assert captions(inputs) == ["x", "y", "z"]
    assert inputs.breaks() == [2]  # shards keep to the files


def test_far_apart_lines_are_read_separately_and_a_shrunk_file_is_an_error(tmp_path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b"first\n" + b"\n" * (GAP_BYTES + 10) + b"second\n")
    inputs = list_inputs([str(path)], TEXT)
    assert captions(inputs) == ["first", "second"]
    path.write_bytes(b"first\n")
    opened = BatchReader({}).open(inputs.refs(0, 2))
    assert opened[0].data == b"first"
    assert isinstance(opened[1], ItemError) and "shorter than when it was listed" in str(
        opened[1].message)


@pytest.mark.parametrize("content, options, message", [
    (b"", {}, "has no text lines"),
    (b" \n\n", {}, "has no text lines"),
    (b"\0binary", {}, "is not a text file"),
    (b"a cat\n", {"keep_columns": ("x",)}, "--keep-columns needs Parquet sources"),
    (b"a cat\n", {"key_column": "k"}, "--key-column needs Parquet sources"),
])
def test_bad_text_sources(tmp_path, content, options, message) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message):
        list_inputs([str(path)], TEXT | options)


def test_missing_and_folder_sources(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        list_inputs([str(tmp_path / "nope.txt")], TEXT)
    with pytest.raises(SpecError, match="is a folder"):
        list_inputs([str(tmp_path)], TEXT)
    with pytest.raises(SpecError, match="matches no file"):
        list_inputs([str(tmp_path / "*.txt")], TEXT)


def test_parquet_text_column(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": ["a cat", None, "  "], "n": [1, 2, 3]}),
                   tmp_path / "t.parquet")
    inputs = list_inputs([str(tmp_path / "t.parquet")], TEXT)
    items = expand(inputs, 0, len(inputs), "")
    opened = BatchReader(inputs.reader_options).open(items.refs)
    assert opened[0].data == b"a cat"
    assert [o.message for o in opened[1:]] == ["column 'caption' is null",
                                               "column 'caption' is blank"]
    with pytest.raises(SpecError, match=r"--text-column n: .* holds int64 there, not text"):
        list_inputs([str(tmp_path / "t.parquet")], TEXT | {"text_column": "n"})
    with pytest.raises(SpecError, match=r"--text-column other: .* has no such column"):
        list_inputs([str(tmp_path / "t.parquet")], TEXT | {"text_column": "other"})
    pq.write_table(pa.table({"label": ["a"]}), tmp_path / "t.parquet")
    with pytest.raises(SpecError, match=r"has no text column .*give --text-column"):
        list_inputs([str(tmp_path / "t.parquet")], TEXT)
