"""gristmill.caffe.Net against real pycaffe: the fixtures in reference/ (see make_reference.py).

Each case's prototxt (and the .caffemodel pycaffe saved for it) runs through ``Net`` with the
inputs pycaffe got; every blob the prototxt names must have pycaffe's shape and values.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import gristmill.caffe as caffe

HERE = os.path.join(os.path.dirname(__file__), "reference")
REFERENCE = dict(np.load(os.path.join(HERE, "reference.npz")))
CASES = sorted({key.split("/")[0] for key in REFERENCE})


@functools.cache
def _forward(case: str) -> dict[str, np.ndarray]:
    weights = os.path.join(HERE, f"{case}.caffemodel")
    proto = os.path.join(HERE, f"{case}.prototxt")
    net = (caffe.Net(proto, weights, caffe.TEST) if os.path.exists(weights)
           else caffe.Net(proto, caffe.TEST))
    for name in net.inputs:
        net.blobs[name].data[...] = REFERENCE[f"{case}/{name}"]
    net.forward()
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def test_every_case_has_its_files() -> None:
    assert set(CASES) == {"argmax", "reduction", "shapes", "pointwise", "spatial", "misc"}
    for case in CASES:
        assert os.path.exists(os.path.join(HERE, f"{case}.prototxt"))


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_blob_matches_pycaffe(key: str) -> None:
    case, blob = key.split("/")
    ours = _forward(case)
    assert blob in ours, f"{case}: no blob {blob!r}"
    expected = REFERENCE[key]
    assert ours[blob].shape == expected.shape, f"{key}: shape {ours[blob].shape}, pycaffe " \
                                               f"{expected.shape}"
    np.testing.assert_allclose(ours[blob], expected, rtol=1e-5, atol=1e-5, err_msg=key)
