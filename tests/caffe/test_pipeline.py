"""A Caffe model inside the parallel pipeline: `gristmill run --model deploy.prototxt --weights`."""

from __future__ import annotations

import numpy as np
import pytest

import gristmill
from gristmill.spec import Preprocess
from gristmill.transforms import load_into

pytestmark = pytest.mark.slow


def test_open_nsfw_through_gristmill_run_matches_pycaffe_api(nsfw_files, small_tree, tmp_path):
    prototxt, weights = nsfw_files
    root, names = small_tree
    pre = Preprocess(resize=(256, 256), crop=(224, 224), mean=(104.0, 117.0, 123.0),
                     std=(1.0, 1.0, 1.0), channel_order="BGR", layout="NCHW")
    report = gristmill.run([str(root)], str(tmp_path / "o"), model=gristmill.ModelSpec(
        ref=prototxt, weights=weights), outputs=["prob", "pool"], preprocess=pre,
        shard_size=10, batch_size=5, progress=False)
    assert report.ok == len(names)
    with gristmill.open(str(tmp_path / "o")) as result:
        assert result.names == names
        prob, pool = result["prob"][()], result["pool"][()]
    assert prob.shape == (len(names), 2) and pool.shape[:2] == (len(names), 1024)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)

    # the same inputs, preprocessed identically, through the pycaffe-compatible API
    import gristmill.caffe as caffe

    net = caffe.Net(prototxt, weights, caffe.TEST)
    picks = [0, 13, 27]
    batch = np.empty((len(picks), 3, 224, 224), np.float32)
    for row, i in enumerate(picks):
        load_into(bytes(root / names[i]), batch[row], pre, 10**8)
    net.blobs["data"].reshape(*batch.shape)
    net.blobs["data"].data[...] = batch
    out = net.forward()
    np.testing.assert_allclose(prob[picks], out["prob"], atol=1e-5)
    np.testing.assert_allclose(pool[picks].reshape(len(picks), -1),
                               net.blobs["pool"].data.reshape(len(picks), -1), atol=1e-4)
