"""Several models in one pass on ``--engine ray`` (the real cluster) equal the separate local runs:
two image models with different preprocessing from one decode, and a head on the first."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import gristmill
from gristmill.spec import ModelSpec, Preprocess

pytestmark = [pytest.mark.ray, pytest.mark.slow]
JOB = dict(batch_size=4, shard_size=8, device="cpu", threads=1, loaders=1, progress=False)
SMALL = Preprocess(resize=72, crop=(64, 64))


def test_several_models_on_ray_equal_separate_runs(ray_cluster, small_tree, tmp_path) -> None:
    from multi_models import score

    src, names = small_tree
    root = tmp_path / "png"  # lossless: every run decodes the same pixels
    for name in names:
        target = (root / name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src / name).convert("RGB").save(target)
    ray_cluster.ensure_workers()
    gristmill.run([str(root)], str(tmp_path / "ray"), engine="ray", format="parquet", models={
        "a": "models_for_tests:tiny_cnn",
        "b": ModelSpec(ref="models_for_tests:tiny_cnn", preprocess=SMALL),
        "h": "multi_models:Score@a/output"}, **JOB)
    alone = {}
    for name, pre in (("a", None), ("b", SMALL)):
        gristmill.run([str(root)], str(tmp_path / name), model="models_for_tests:tiny_cnn",
                      preprocess=pre, workers=1, **JOB)
        with gristmill.open(str(tmp_path / name)) as result:
            alone[name] = dict(zip(result.names, result["output"][:], strict=True))
    with gristmill.open(str(tmp_path / "ray")) as result:
        assert len(result.names) == len(names)
        rows = {k: dict(zip(result.names, result[k][:], strict=True))
                for k in ("a/output", "b/output", "h/score")}
    for name in alone["a"]:
        np.testing.assert_allclose(rows["a/output"][name], alone["a"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rows["b/output"][name], alone["b"][name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rows["h/score"][name], score(alone["a"][name][None])[0],
                                   atol=1e-5, rtol=1e-6)
    assert not np.allclose(rows["a/output"][names[0].replace(".jpg", ".png")],
                           rows["b/output"][names[0].replace(".jpg", ".png")])
