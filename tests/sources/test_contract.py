"""The source contract over every registered kind: listed in a stable order (containers as units
a worker expands, without the driver reading them) with unique names, each item's bytes opened in
a loader exactly as they were written, a vanished container or file an error row in the item's
place (never an exception), and the other kinds' options refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from gristmill.errors import ItemError, SpecError
from gristmill.sources import Kind, expand, list_inputs
from gristmill.sources.kinds import KINDS, UNITS
from gristmill.sources.reader import BatchReader

N = 5


def _payload(i: int) -> bytes:
    return f"item {i} \u00fc".encode() * (i + 1)


def _files(root: Path) -> tuple[str, list[str], list[Path]]:
    folder = root / "photos"
    folder.mkdir()
    paths = []
    for i in range(N):
        (folder / f"{i}.jpg").write_bytes(_payload(i))
        paths.append(folder / f"{i}.jpg")
    return str(folder), [f"{i}.jpg" for i in range(N)], paths


def _lines(root: Path) -> tuple[str, list[str], list[Path]]:
    path = root / "captions.txt"
    path.write_bytes(b"".join(_payload(i) + b"\n" for i in range(N)))
    return str(path), [str(i + 1) for i in range(N)], [path]


def _tars(root: Path) -> tuple[str, list[str], list[Path]]:
    paths = [root / "a.tar", root / "b.tar"]
    for t, path in enumerate(paths):
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(N)[t * 3:(t + 1) * 3]:
                for suffix, data in ((".jpg", _payload(i)), (".txt", b"caption")):
                    info = tarfile.TarInfo(f"k{i}{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / "*.tar"), [f"k{i}" for i in range(N)], paths


def _tables(root: Path) -> tuple[str, list[str], list[Path]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "t.parquet"
    pq.write_table(pa.table({"key": [f"r{i}" for i in range(N)],
                             "jpg": pa.array([_payload(i) for i in range(N)], pa.binary())}),
                   path, row_group_size=2)
    return str(path), [f"r{i}" for i in range(N)], [path]


MAKERS = {Kind.FILE: _files, Kind.LINE: _lines, Kind.TAR: _tars, Kind.TABLE: _tables}


def test_every_kind_has_a_record_and_containers_have_distinct_suffixes():
    assert set(KINDS) == set(MAKERS) and set(KINDS) | set(UNITS) == set(Kind)
    assert not set(KINDS) & set(UNITS)
    suffixes = [k.suffix for k in KINDS.values() if k.suffix]
    assert len(suffixes) == len(set(suffixes))


@pytest.mark.parametrize("kind", list(KINDS), ids=lambda k: Kind(k).name.lower())
def test_listed_then_opened_byte_for_byte_and_a_vanished_source_is_an_error_row(tmp_path, kind):
    record = KINDS[kind]
    source, names, paths = MAKERS[kind](tmp_path)
    options = {"modality": record.modalities[0]}
    inputs = list_inputs([source], options)
    n = len(inputs)
    assert list_inputs([source], options).digest(0, n) == inputs.digest(0, n)  # stable
    items = expand(inputs, 0, n, "")
    assert [name.decode() for name in items.names] == names
    if record.suffix:  # a container kind: its entries are units, expanded by the worker
        assert inputs.has_units and n < N
    reader = BatchReader(inputs.reader_options)
    opened = reader.open(items.refs)
    assert [o.data for o in opened] == [_payload(i) for i in range(N)]
    assert reader.open(items.refs[1:3])[1].data == _payload(2)  # any run of a batch
    for path in paths:
        path.unlink()
    gone = BatchReader(inputs.reader_options).open(items.refs)
    assert len(gone) == N
    assert all(isinstance(e, ItemError) and e.stage == "read" for e in gone)
    if record.suffix:  # a unit whose container vanished is one error row, never an exception
        failed = expand(inputs, 0, n, "").failed
        assert sorted(failed) == list(range(n))
        assert all(e.stage == "read" for _, e in failed.values())


@pytest.mark.parametrize("kind", list(KINDS), ids=lambda k: Kind(k).name.lower())
def test_options_of_other_kinds_are_refused_in_one_line(tmp_path, kind):
    record = KINDS[kind]
    source, _, _ = MAKERS[kind](tmp_path)
    others = {o for k in KINDS.values() for o in k.reads} - set(record.reads)
    for option in sorted(others):
        with pytest.raises(SpecError, match=f"--{option.replace('_', '-')} needs"):
            list_inputs([source], {"modality": record.modalities[0], option: "x"})
