"""Callable classes (Ray Data's way): a numpy-only model through ``gristmill run`` equals calling
it directly on the same preprocessed images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from jobhelp import cli

import gristmill
from gristmill import models
from gristmill.models.classes import DEFAULT_PRESET
from gristmill.spec import ModelSpec
from gristmill.transforms import load_into

FLAGS = ("--shard-size", "8", "--batch-size", "4", "--workers", "1", "--threads", "1",
         "--loaders", "1", "--device", "cpu", "--no-progress")


def direct(root: Path, names: list[str], model: object) -> dict[str, np.ndarray]:
    """The class called once on all images, preprocessed as the job does it (its preset)."""
    pre = DEFAULT_PRESET.complete()
    rows = np.empty((len(names), *pre.item_shape()), np.float32)
    for i, name in enumerate(names):
        load_into(os.fsencode(root / name), rows[i], pre, 1 << 30)
    return model({"image": rows.astype(np.uint8), "name": np.array(names)})


def read(out: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    with gristmill.open(str(out)) as result:
        return result.names, {k: v[:] for k, v in result.outputs.items()}


@pytest.mark.slow  # a whole job
def test_numpy_class_through_gristmill_run_equals_direct_call(small_tree, tmp_path) -> None:
    import numpy_models

    root, _ = small_tree
    out = tmp_path / "out"
    done = cli("run", str(root), "-o", str(out), "--model", "numpy_models:ColourStats", *FLAGS)
    assert done.returncode == 0, done.stderr
    names, outputs = read(out)
    assert outputs.keys() == {"mean", "std", "projected", "name_length"}
    expected = direct(root, names, numpy_models.ColourStats())
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-6, err_msg=key)


@pytest.mark.slow  # a whole job
def test_a_declared_preset_gives_float_rows_and_the_api_takes_the_class(small_tree,
                                                                       tmp_path) -> None:
    from numpy_models import Normalised

    root, _ = small_tree
    gristmill.run([str(root)], str(tmp_path / "out"), model=Normalised, shard_size=8,
                  batch_size=4, workers=1, threads=1, loaders=1, device="cpu", progress=False)
    names, outputs = read(tmp_path / "out")
    assert outputs["centre"].shape == (len(names), 3) and outputs["centre"].dtype == np.float32
    assert np.abs(outputs["centre"]).max() <= 1.0 and np.abs(outputs["centre"]).max() > 0.1


def test_kinds_and_declared_outputs() -> None:
    assert models.kind_of("numpy_models:ColourStats") == "callable"
    assert models.kind_of("models_for_tests:TinyCNN") == "factory"  # an nn.Module class
    assert models.kind_of("models_for_tests:tiny_cnn") == "factory"
    info = models.describe(ModelSpec(ref="numpy_models:Normalised"))
    assert info.outputs == ("centre",) and info.preset.layout == "NCHW"


@pytest.mark.slow  # the CLI in its own interpreter
def test_an_output_that_is_not_a_dict_is_one_line_error(small_tree, tmp_path) -> None:
    root, _ = small_tree
    done = cli("run", str(root), "-o", str(tmp_path / "o"), "--model",
               "numpy_models:ReturnsAList", *FLAGS)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a dict" in done.stderr


@pytest.mark.slow  # a whole job
def test_a_model_that_fails_on_the_blank_warm_up_input_runs_every_image(small_tree,
                                                                         tmp_path) -> None:
    import numpy_models

    root, _ = small_tree
    out = tmp_path / "out"
    done = cli("run", str(root), "-o", str(out), "--model", "numpy_models:RefusesBlank", *FLAGS)
    assert done.returncode == 0, done.stderr
    names, outputs = read(out)
    with gristmill.open(str(out)) as result:
        assert len(result.errors) == 0
    expected = direct(root, names, numpy_models.ColourStats())["mean"].mean(axis=1)
    np.testing.assert_allclose(outputs["mean"], expected, rtol=1e-6)
