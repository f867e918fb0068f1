"""The core path end to end: real photos through the bundled model into features.h5."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from jobhelp import BAD, RUN

import gristmill
from gristmill.errors import SpecError

pytestmark = pytest.mark.slow


def test_every_input_appears_exactly_once(job_tree, reference):
    _, names = job_tree
    out, report = reference
    with gristmill.open(str(out)) as result:
        got = result.names
        errors = result.errors
        feats = result["features"][()]
        logits = result["logits"][()]
    assert got == names  # sorted, relative to the source root, repeated basenames kept apart
    assert sorted(e[0] for e in errors) == sorted(BAD)
    assert len(set(got) | {e[0] for e in errors}) == len(got) + len(errors) == len(names) + 3
    assert feats.shape == (len(names), 1280) and logits.shape == (len(names), 1000)
    assert np.isfinite(feats).all() and np.isfinite(logits).all()
    assert report.ok == len(names) and report.errors == 3 and report.complete


def test_coffee_is_classified_as_espresso(reference):
    out, _ = reference
    with gristmill.open(str(out)) as result:
        rows = [i for i, n in enumerate(result.names) if n.endswith("coffee.jpg")]
        classes = result["logits"][()][rows].argmax(axis=1)
    assert len(rows) == 9 and (classes == 967).all()


def test_corrupt_files_are_recorded_with_stage_and_reason(reference):
    out, _ = reference
    with gristmill.open(str(out)) as result:
        errors = {name: (stage, message) for name, stage, message in result.errors}
    assert errors["bad/empty.jpg"] == ("read", "empty file")
    assert errors["bad/text.jpg"][0] == "decode"
    assert errors["bad/truncated.jpg"][0] == "decode"
    assert all(message for _, message in errors.values())


def test_output_layout_is_plain_hdf5(reference):
    out, _ = reference
    shards = sorted(os.listdir(out / "shards"))
    assert len(shards) == 2 * 17 and shards[0] == "shard-000000.h5"
    with h5py.File(out / "features.h5") as f:
        assert f["features"].is_virtual and f.attrs["complete"]
        assert set(f) == {"names", "features", "logits", "errors"}
    with h5py.File(out / "shards" / "shard-000000.h5") as f:
        # shard 0 holds bad/* (sorted first): 3 error rows and 5 feature rows
        assert len(f["names"]) == f["features"].shape[0] == 5 and len(f["errors"]) == 3
    assert (out / "job.json").exists() and (out / "inputs.npz").exists()


def test_rerun_resumes_with_nothing_to_do_and_other_jobs_are_refused(job_tree, reference):
    root, _ = job_tree
    out, _ = reference
    before = {n: os.stat(out / "shards" / n).st_mtime_ns for n in os.listdir(out / "shards")}
    report = gristmill.run([str(root)], str(out), **RUN)
    assert report.shards_skipped == report.shards == 17 and report.shards_committed == 0
    assert before == {n: os.stat(out / "shards" / n).st_mtime_ns
                      for n in os.listdir(out / "shards")}
    with pytest.raises(SpecError, match="holds a different job"):
        gristmill.run([str(root)], str(out), **{**RUN, "outputs": ("logits",)})


def test_onnx_model_gives_the_same_logits(job_tree, reference, tmp_path, lite0):
    import torch

    class Pair(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(x)
            return out["features"], out["logits"]

    path = tmp_path / "lite0.onnx"
    # eval(): the exporter restores the wrapper's mode afterwards, and a new Module is in training
    # mode, which would leave the shared fixture model in training mode too
    torch.onnx.export(Pair(lite0).eval(), torch.zeros(1, 3, 224, 224), str(path), dynamo=False,
                      input_names=["input"], output_names=["features", "logits"],
                      dynamic_axes={"input": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}})
    root, _ = job_tree
    ref_out, _ = reference
    gristmill.run([str(root)], str(tmp_path / "out"), model=str(path), outputs=["logits"],
                  preprocess=gristmill.Preprocess(resize=256, crop=(224, 224),
                                                  mean=(127.5,) * 3, std=(127.5,) * 3),
                  shard_size=64, batch_size=16, progress=False)
    with gristmill.open(str(tmp_path / "out")) as onnx, gristmill.open(str(ref_out)) as ref:
        assert onnx.names == ref.names
        np.testing.assert_allclose(onnx["logits"][()], ref["logits"][()], atol=1e-4, rtol=0)


def test_intermediate_module_outputs_by_name(small_tree, tmp_path):
    root, names = small_tree
    gristmill.run([str(root)], str(tmp_path / "o"), outputs=["_conv_head", "features"],
                  shard_size=100, batch_size=14, progress=False)
    with gristmill.open(str(tmp_path / "o")) as r:
        assert r["_conv_head"].shape == (len(names), 1280, 7, 7)
        pooled = np.maximum(np.minimum(r["_conv_head"][()], 1e9), -1e9)
        assert np.isfinite(pooled).all() and r["features"].shape == (len(names), 1280)
