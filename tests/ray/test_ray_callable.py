"""A numpy-only callable class through ``--engine ray`` on the real cluster equals calling it."""

from __future__ import annotations

import numpy as np
import pytest

import gristmill

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_callable_class_on_ray_equals_direct_call(ray_cluster, small_tree, tmp_path) -> None:
    import numpy_models
    from models.test_callable_class import direct

    ray_cluster.ensure_workers()
    root, _ = small_tree
    gristmill.run([str(root)], str(tmp_path / "out"), model="numpy_models:ColourStats",
                  engine="ray", batch_size=4, shard_size=8, device="cpu", threads=1, loaders=1,
                  progress=False)
    with gristmill.open(str(tmp_path / "out")) as result:
        names = result.names
        outputs = {k: v[:] for k, v in result.outputs.items()}
    assert len(names) == 28 and outputs.keys() == {"mean", "std", "projected", "name_length"}
    expected = direct(root, names, numpy_models.ColourStats())
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-6, err_msg=key)
