"""Several models in one pass on ``--engine ray`` (the real cluster) equal the separate local runs,
in every format: two image models with different preprocessing from one decode, and a head on the
first."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import gristmill
from gristmill.spec import ModelSpec, Preprocess

pytestmark = [pytest.mark.ray, pytest.mark.slow]
JOB = dict(batch_size=4, shard_size=8, device="cpu", threads=1, loaders=1, progress=False)
SMALL = Preprocess(resize=72, crop=(64, 64))


@pytest.fixture(scope="module")
def pngs(small_tree, tmp_path_factory):
    """The small tree as PNGs (lossless: every run decodes the same pixels) and each image model
    run alone on the local engine: {model: {name: row}}."""
    src, names = small_tree
    root = tmp_path_factory.mktemp("ray-multi") / "png"
    for name in names:
        target = (root / name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src / name).convert("RGB").save(target)
    alone = {}
    for model, pre in (("a", None), ("b", SMALL)):
        out = root.parent / model
        gristmill.run([str(root)], str(out), model="models_for_tests:tiny_cnn",
                      preprocess=pre, workers=1, **JOB)
        with gristmill.open(str(out)) as result:
            alone[model] = dict(zip(result.names, result["output"][:], strict=True))
    return root, alone


@pytest.mark.parametrize("fmt", ["hdf5", "parquet", "npy"])
def test_several_models_on_ray_equal_separate_runs(fmt, ray_cluster, pngs, tmp_path) -> None:
    from multi_models import score

    root, alone = pngs
    ray_cluster.ensure_workers()
    gristmill.run([str(root)], str(tmp_path / "ray"), engine="ray", format=fmt, models={
        "a": "models_for_tests:tiny_cnn",
        "b": ModelSpec(ref="models_for_tests:tiny_cnn", preprocess=SMALL),
        "h": "multi_models:Score@a/output"}, **JOB)
    with gristmill.open(str(tmp_path / "ray")) as result:
        assert sorted(result.names) == sorted(alone["a"])
        rows = {k: dict(zip(result.names, np.asarray(result[k][:]), strict=True))
                for k in ("a/output", "b/output", "h/score")}
    for name in alone["a"]:
        np.testing.assert_allclose(rows["a/output"][name], alone["a"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rows["b/output"][name], alone["b"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rows["h/score"][name], score(alone["a"][name][None])[0],
                                   atol=1e-5, rtol=1e-6)
    first = next(iter(alone["a"]))
    assert not np.allclose(rows["a/output"][first], rows["b/output"][first])
