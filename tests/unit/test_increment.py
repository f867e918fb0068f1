"""Append-only input lists, shards planned per segment, and the options that choose them."""

from __future__ import annotations

import dataclasses
import json

import outkit
import pytest

from gristmill import increment, ledger, outdir
from gristmill.errors import SpecError
from gristmill.plan import plan, plan_segments
from gristmill.sources import InputList
from gristmill.sources.base import ItemRef, Kind, Listing
from gristmill.spec import JobSpec
from gristmill.store import Store


def test_segments_keep_the_ids_and_ranges_of_earlier_shards():
    assert plan_segments([(0, "list")], 41, 16) == plan(41, 16)
    grown = plan_segments([(0, "list"), (41, "append"), (91, "retry")], 92, 16)
    assert grown[:3] == plan(41, 16)  # shard 2 still covers 32..41
    assert [(s.id, s.start, s.stop, s.retry) for s in grown[3:]] == [
        (3, 41, 57, False), (4, 57, 73, False), (5, 73, 89, False), (6, 89, 91, False),
        (7, 91, 92, True)]
    # a segment recorded but whose list was never saved (a kill between the two) is ignored
    assert plan_segments([(0, "list"), (41, "append")], 41, 16) == plan(41, 16)


def test_extend_appends_without_moving_existing_inputs():
    old = InputList.from_names(b"/r", [b"b.jpg", b"a.jpg"])
    listed = InputList.from_names(b"/r", [b"a.jpg", b"c.jpg", b"b.jpg", b"0.jpg"])
    new = increment.new_inputs(old, listed)
    assert [listed.raw(i) for i in new] == [b"0.jpg", b"c.jpg"]
    grown = increment.extend(old, listed, new)
    assert grown.raw_range(0, 4) == [b"a.jpg", b"b.jpg", b"0.jpg", b"c.jpg"]
    assert grown.digest(0, 2) == old.digest(0, 2)  # committed markers stay valid
    with pytest.raises(SpecError, match="same sources"):
        increment.new_inputs(old, InputList.from_names(b"/other", [b"a.jpg"]))


def test_extend_carries_the_references_of_tar_samples():
    def tars(names, containers, starts):
        return InputList.from_listing(Listing(
            names=names, kind=Kind.TAR, containers=containers,
            container=[0 if "a" in n.decode() else len(containers) - 1 for n in names],
            start=starts, size=[10] * len(names)))

    old = tars([b"a1", b"a2"], ["s/0.tar"], [0, 512])
    listed = tars([b"a1", b"a2", b"b1"], ["s/0.tar", "s/1.tar"], [0, 512, 1024])
    new = increment.new_inputs(old, listed)
    grown = increment.extend(old, listed, new)
    assert grown.refs(0, 3) == (ItemRef(Kind.TAR, "s/0.tar", 0, 10),
                                ItemRef(Kind.TAR, "s/0.tar", 512, 10),
                                ItemRef(Kind.TAR, "s/1.tar", 1024, 10))
    assert grown.breaks() == [2]
    with pytest.raises(SpecError, match="another kind of input"):
        increment.extend(InputList.from_names(b"", [b"x"]), listed, [2])


def test_errors_to_retry_skips_inputs_already_in_a_retry_shard(tmp_path):
    state = outkit.make_job(tmp_path, ["a", "b", "c", "d"], shard_size=2)
    outkit.commit(state, 0, {"b": ("read", "x")})
    outkit.commit(state, 1, {"c": ("read", "x"), "d": ("read", "y")})
    state = state.refreshed()
    assert names(increment.errors_to_retry(state)) == [b"b", b"c", b"d"]
    # b already retried once, in shard 2: not named again while that shard stands
    state = state.grown("retry", increment.extend(state.inputs, state.inputs, [1]))
    assert [(s.id, s.start, s.stop, s.retry) for s in state.shards][2] == (2, 4, 5, True)
    assert names(increment.errors_to_retry(state)) == [b"c", b"d"]
    outkit.commit(state, 2, {"b": ("read", "again")})
    assert names(increment.errors_to_retry(state.refreshed())) == [b"c", b"d", b"b"]


def test_errors_to_retry_finds_the_rows_of_old_hdf5_markers_by_name(tmp_path):
    state = outkit.make_job(tmp_path, ["a", "b", "c", "d"], shard_size=2)
    outkit.commit(state, 1, {"d": ("decode", "bad")}, legacy=True)
    assert names(increment.errors_to_retry(state.refreshed())) == [b"d"]


def names(inputs: InputList) -> list[bytes]:
    return inputs.raw_range(0, len(inputs))


def test_segments_file_is_written_before_the_list(tmp_path):
    state = outkit.make_job(tmp_path, ["a", "b"], shard_size=2)
    listed = InputList.from_names(b"/photos", [b"a", b"b", b"c"])
    grown, did = increment.grow(dataclasses.replace(
        state, spec=dataclasses.replace(state.spec, append=True)), listed)
    assert did and len(grown.inputs) == 3
    assert len(InputList.load(str(tmp_path / ledger.INPUTS_FILE))) == 2  # grow writes nothing
    outdir.save(grown, str(tmp_path), grown=True)
    assert outdir.load_segments(Store(str(tmp_path))) == [(0, "list"), (2, "append")]
    assert len(InputList.load(str(tmp_path / ledger.INPUTS_FILE))) == 3
    assert json.loads((tmp_path / "segments.json").read_text())[1] == {"start": 2,
                                                                       "kind": "append"}
    # a kill between the two files: the segment starting at the old list's end is ignored
    (tmp_path / ledger.INPUTS_FILE).unlink()
    state.inputs.save(str(tmp_path / ledger.INPUTS_FILE))
    assert outdir.reopen(str(tmp_path)).segments == ((0, "list"),)


@pytest.mark.parametrize("options,message", [
    ({"format": "csv"}, "--format must be hdf5, parquet, npy"),
    ({"out": "s3://b/run"}, "--format hdf5 output needs a local folder; use --format parquet"),
    ({"outputs": ("names",)}, "--outputs names: the name is reserved by --format hdf5"),
    ({"keep_columns": ("f",), "outputs": ("f",), "format": "parquet"}, "--keep-columns f clashes"),
    ({"out": "s3://b/run", "format": "npy", "engine": "ray"}, "runs on --engine local"),
    ({"append": True, "overwrite": True}, "cannot be combined with --append"),
    ({"format": "npy", "outputs": ("metadata",)}, "'metadata' is reserved"),
])
def test_bad_output_options_are_one_line_errors(options, message):
    spec = JobSpec(**({"sources": ("x",), "out": "o"} | options))
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        spec.check()


def test_format_is_part_of_the_identity_and_hdf5_keeps_the_old_one():
    base = JobSpec(sources=("x",), out="o")
    assert "format" not in base.identity()
    assert JobSpec(sources=("x",), out="o", format="parquet").identity()["format"] == "parquet"
    assert JobSpec(sources=("x",), out="o", append=True).identity() == base.identity()
