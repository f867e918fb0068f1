"""Several models in one pass equal the separate runs, row for row, in every format.

Two image models with different inputs (a torch factory at its 224x224 preset, an ONNX net at
96x96, each with its own preprocessing from one decode) and a head on the first one's output.
The photos are PNGs: every run decodes them to the same pixels, so the rows must agree to float
rounding (1e-5); the head must equal its own formula on the first model's rows.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from jobhelp import cli
from multi_models import score
from multikit import by_name

import gristmill

pytestmark = pytest.mark.slow
RUN = dict(shard_size=8, batch_size=5, workers=1, threads=1, loaders=1, device="cpu",
           progress=False)
TINY = "models_for_tests:tiny_cnn"


@pytest.fixture(scope="module")
def separate(png_tree, onnx_net, tmp_path_factory):
    """Each image model run alone: {model name: {input name: row}}."""
    root, _ = png_tree
    found = {}
    for name, ref, output in (("a", TINY, "output"), ("b", str(onnx_net), "logits")):
        out = tmp_path_factory.mktemp(f"alone-{name}") / "out"
        gristmill.run([str(root)], str(out), model=ref, outputs=[output], **RUN)
        with gristmill.open(str(out)) as result:
            found[name] = by_name(result, output)
    return found


@pytest.mark.parametrize("fmt", ["hdf5", "parquet", "npy"])
def test_one_pass_equals_separate_runs(fmt, png_tree, onnx_net, separate, tmp_path):
    root, names = png_tree
    out = tmp_path / "out"
    report = gristmill.run([str(root)], str(out), format=fmt, models={
        "a": TINY, "b": str(onnx_net), "h": "multi_models:Score@a/output"}, **RUN)
    assert report.errors == 1
    with gristmill.open(str(out)) as result:
        assert sorted(result.outputs) == ["a/output", "b/logits", "h/name_length", "h/score"]
        assert sorted(result.names) == names
        assert [e[0] for e in result.errors] == ["broken.png"]
        a, b, h = (by_name(result, k) for k in ("a/output", "b/logits", "h/score"))
        lengths = by_name(result, "h/name_length")
    for name in names:
        np.testing.assert_allclose(a[name], separate["a"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(b[name], separate["b"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(h[name], score(a[name][None])[0], atol=1e-5, rtol=1e-6)
        assert lengths[name] == len(name)
    assert not np.allclose(a[names[0]], b[names[0]])  # two models, not one twice
    if fmt == "hdf5":
        import h5py

        # CPU workers map each model's weights, saved once by the driver (the ONNX net loads its
        # own session): one file per model, listed for the workers
        listed = json.loads(next((out / ".cache").glob("models-*.json")).read_text())
        assert list(listed) == ["a"] and os.path.isfile(listed["a"])

        with h5py.File(out / "features.h5") as f:  # a group per model
            assert f["a"]["output"].shape == (len(names), 5)
    if fmt == "npy":
        assert sorted(p.name for p in (out / "b" / "logits").glob("*.npy"))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert {"a/output", "b/logits", "h/score"} <= set(pq.read_schema(
            next((out / "parquet").glob("*.parquet"))).names)


def test_cli_per_model_options_resume_and_identity(png_tree, onnx_net, tmp_path):
    root, names = png_tree
    out = tmp_path / "out"
    args = ["run", str(root), "-o", str(out), "--model", f"a={TINY}", "--model",
            f"b={onnx_net}", "--model", "h=multi_models:Score@b/logits", "--crop", "a=64x64",
            "--resize", "a=64", "--outputs", "a/output,h/score",
            "--shard-size", "8", "--batch-size", "5", "--workers", "1", "--threads", "1",
            "--loaders", "1", "--device", "cpu", "--progress", "none"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    job = json.loads((out / "job.json").read_text())
    models = {m["name"]: m for m in job["identity"]["models"]}
    assert models["a"]["preprocess"]["crop"] == [64, 64]
    assert models["b"]["preprocess"]["crop"] == [96, 96]  # b keeps its own preset
    assert models["h"]["input"] == "b/logits" and "b/logits" not in job["spec"]["outputs"]
    with gristmill.open(str(out)) as result:
        assert sorted(result.outputs) == ["a/output", "h/score"]
        assert len(result.names) == len(names)
    assert (out / "report.html").exists(), first.stderr
    page = (out / "report.html").read_text()  # each model's share of the model time
    assert 'id="models">Model time by model: a ' in page and ", h " in page
    again = cli(*args)  # the same command resumes: nothing left to do
    assert again.returncode == 0 and "0 committed" in again.stderr, again.stderr
    other = cli(*[a if a != "a=64x64" else "a=32x32" for a in args])  # another preprocessing
    assert other.returncode == 2 and "holds a different job" in other.stderr, other.stderr


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", f"a={TINY}", "--model", f"a={TINY}"], "given twice"),
    (["--model", f"a={TINY}", "--model", "h=multi_models:Score@z/output"],
     "no model is named 'z'"),
    (["--model", f"a={TINY}", "--model", "h=multi_models:Score@a/nothing"],
     "has no output 'nothing'"),
    (["--model", f"a={TINY}", "--model", "g=multi_models:Score@h/score",
      "--model", "h=multi_models:Score@g/score"], "cycle: g -> h -> g"),
])
def test_bad_models_one_line_exit_2(extra, message, png_tree, tmp_path):
    root, _ = png_tree
    done = cli("run", str(root), "-o", str(tmp_path / "out"), *extra, "--progress", "none")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_append_and_resume_with_several_models(png_tree, onnx_net, tmp_path):
    import shutil

    root, names = png_tree
    src = tmp_path / "photos"
    shutil.copytree(root / "g0", src / "g0")
    models = {"a": TINY, "b": str(onnx_net), "h": "multi_models:Score@b/logits"}
    job = dict(RUN, format="npy", models=models)
    out = tmp_path / "out"
    gristmill.run([str(src)], str(out), **job)
    first = sorted((out / "shards").glob("shard-*.json"))
    first[-1].unlink()  # a shard whose marker is gone is not committed: the rerun computes it
    again = gristmill.run([str(src)], str(out), **job)
    assert again.shards_skipped == len(first) - 1
    shutil.copytree(root / "g1", src / "g1")  # new inputs: --append runs only them
    grown = gristmill.run([str(src)], str(out), append=True, **job)
    assert grown.shards_skipped == len(first)
    fresh = tmp_path / "fresh"
    gristmill.run([str(src)], str(fresh), **job)
    with gristmill.open(str(out)) as ours, gristmill.open(str(fresh)) as theirs:
        assert sorted(ours.names) == sorted(theirs.names) == [
            n for n in names if n.startswith(("g0/", "g1/"))]
        for key in ("a/output", "b/logits", "h/score", "h/name_length"):
            mine, ref = by_name(ours, key), by_name(theirs, key)
            for name in ref:
                np.testing.assert_allclose(mine[name], ref[name], atol=1e-6, rtol=0)


def test_torch_and_onnx_heads(png_tree, tmp_path):
    """A torch module and an ONNX model as heads get the input model's rows as an array; a head
    may read a head."""
    import torch
    from torch_heads import linear_head

    root, names = png_tree
    head_onnx = tmp_path / "head.onnx"
    torch.onnx.export(linear_head(), torch.zeros(1, 5), str(head_onnx), dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    out = tmp_path / "out"
    gristmill.run([str(root)], str(out), format="parquet", models={
        "a": TINY, "t": "torch_heads:linear_head@a/output", "o": f"{head_onnx}@a/output",
        "s": "multi_models:Score@t/output"}, outputs=["a/output", "t/output", "o/y", "s/score"],
        **RUN)  # s: a head on a head
    with gristmill.open(str(out)) as result:
        a, t, o, s = (np.asarray(result[k][:]) for k in ("a/output", "t/output", "o/y", "s/score"))
    assert len(a) == len(names)
    with torch.no_grad():
        expected = linear_head()(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(t, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(o, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(s, score(t), atol=1e-5, rtol=1e-6)
