"""The pycaffe scripts users write today (seeds 000 and 001), ported to Python 3 and completed
where they elide code, run with only `import caffe` changed to `import gristmill.caffe as caffe`.
They use the real open_nsfw model and real photographs; GPU calls are guarded for CPU machines."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

SEED_000 = '''
import gristmill.caffe as caffe
import numpy as np
from multiprocessing import Pool

MODEL_FILE = {proto!r}
PRETRAINED = {weights!r}
IMAGE_FILES = {images!r}

def get_image_data(path):
    net_shape = (1, 3, 224, 224)
    transformer = caffe.io.Transformer({{"data": net_shape}})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", np.array([104, 117, 123]))
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    img = caffe.io.load_image(path)
    return transformer.preprocess("data", img)[np.newaxis]

def process_image(image_path):
    net = caffe.Net(MODEL_FILE, PRETRAINED, caffe.TEST)
    img_data = get_image_data(image_path)
    net.blobs["data"].data[...] = img_data
    output = net.forward()
    class_index = output["prob"].argmax()
    del net
    return (image_path, int(class_index), output["prob"].copy())

if __name__ == "__main__":
    # The seed's Pool example: the parent only hands out paths, each worker loads its own net.
    pool = Pool(processes=2)
    results = pool.map(process_image, IMAGE_FILES)
    pool.close()
    pool.join()
    # The seed's single forward pass, in the parent after the pool (see the note in the test).
    caffe.set_mode_cpu()
    net = caffe.Net(MODEL_FILE, PRETRAINED, caffe.TEST)
    net.blobs["data"].data[...] = get_image_data(IMAGE_FILES[0])
    output = net.forward()
    print(net.blobs["prob"].data.shape)
    np.save({out!r}, np.concatenate([r[2] for r in results]))
    assert np.allclose(results[0][2], output["prob"], atol=1e-6)
'''

SEED_001 = '''
import multiprocessing
from multiprocessing import Pool
import os
import gristmill.caffe as caffe
import numpy as np
import h5py

def split_list(alist, wanted_parts=1):
    length = len(alist)
    return [alist[i * length // wanted_parts: (i + 1) * length // wanted_parts]
            for i in range(wanted_parts)]

def gpu_task(prototxt, caffemodel, layer, path_images, out, gpu=0):
    num_images = len(path_images)
    h5f = h5py.File(out, "w")
    try:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    except RuntimeError:
        caffe.set_mode_cpu()
    net = caffe.Net(prototxt, caffemodel, caffe.TEST)
    net.forward()
    transformer = caffe.io.Transformer({{"data": net.blobs["data"].data.shape}})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", np.array([104, 117, 123]))
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    features = []
    image_names = []
    for i, path in enumerate(path_images):
        print("%d(%d), %s" % ((i + 1), num_images, os.path.basename(path)))
        if os.path.splitext(os.path.basename(path))[0][-6:] != "single":
            img = transformer.preprocess("data", caffe.io.load_image(path))
            net.blobs["data"].data[...] = img
            net.forward()
            feat = net.blobs[layer].data[0].flatten().copy()
            features.append(feat)
            image_names.append(os.path.basename(path).encode())
    features = np.array(features)
    h5f["feats"] = features
    h5f["names"] = image_names
    h5f.close()
    print("gpu %d task has finished..." % (gpu))

if __name__ == "__main__":
    multiprocessing.freeze_support()
    pool = multiprocessing.Pool(2)
    dir_images = {folder!r}
    path_images = [os.path.join(dir_images, f) for f in sorted(os.listdir(dir_images))
                   if f.endswith(".jpg")]
    layer = "pool"
    prototxt = {proto!r}
    caffemodel = {weights!r}
    out = {out!r}
    parts = 2
    out_files = []
    for i in range(parts):
        out_files.append(os.path.join(out, str(i) + ".h5"))
    blocks = split_list(path_images, wanted_parts=parts)
    jobs = [pool.apply_async(gpu_task, args=(prototxt, caffemodel, layer, blocks[i],
                                             out_files[i], i + (8 - parts)))
            for i in range(parts)]
    pool.close()
    pool.join()
    for job in jobs:
        job.get()
'''


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, photos):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, im in enumerate(photos):
        path = folder / f"photo{i}.jpg"
        Image.fromarray(im).resize((256, 256)).save(path, quality=95)
        paths.append(str(path))
    return str(folder), paths


def _run(script: str, tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]


def test_seed_000_forward_and_pool(tmp_path, nsfw_files, photo_files):
    """Known limit: forking a Pool *after* running a net in the parent hangs the children
    (PyTorch's CPU thread pool is not fork-safe), so the parent's forward runs after the pool."""
    out = str(tmp_path / "probs.npy")
    _run(SEED_000.format(proto=nsfw_files[0], weights=nsfw_files[1], images=photo_files[1],
                         out=out), tmp_path)
    probs = np.load(out)
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_seed_001_features_to_hdf5(tmp_path, nsfw_files, photo_files, nsfw_graph):
    h5py = pytest.importorskip("h5py")
    import torch

    from gristmill.caffe.io import Transformer, load_image

    _run(SEED_001.format(folder=photo_files[0], proto=nsfw_files[0], weights=nsfw_files[1],
                         out=str(tmp_path)), tmp_path)
    feats, names = [], []
    for part in ("0.h5", "1.h5"):
        with h5py.File(tmp_path / part) as f:
            feats.append(f["feats"][...])
            names += [n.decode() for n in f["names"][...]]
    feats = np.concatenate(feats)
    assert names == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
    assert feats.shape == (3, 1024)
    t = Transformer({"data": (1, 3, 224, 224)})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.array([104, 117, 123]))
    t.set_raw_scale("data", 255)
    t.set_channel_swap("data", (2, 1, 0))
    x = t.preprocess("data", load_image(photo_files[1][2]))[None]
    with torch.inference_mode():
        want = nsfw_graph.run({"data": torch.from_numpy(x)}, ("pool",))["pool"].numpy()
    np.testing.assert_allclose(feats[2], want.ravel(), rtol=1e-4, atol=1e-4)


def test_pycaffe_surface(nsfw_files, photos):
    import gristmill.caffe as caffe

    from .conftest import caffe_batch

    net = caffe.Net(nsfw_files[0], caffe.TEST, weights=nsfw_files[1])
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert [b.data.shape for b in net.params["conv_1"]] == [(64, 3, 7, 7), (64,)]
    batch = caffe_batch(photos)
    net.blobs["data"].reshape(*batch.shape)
    net.reshape()
    assert net.blobs["prob"].data.shape == (3, 2)
    out = net.forward(data=batch, blobs=["pool"])
    assert out["pool"].shape == (3, 1024, 1, 1)
    early = net.forward(end="pool1")
    assert set(early) == {"pool1"} and early["pool1"].shape[0] == 3
    every = net.forward_all(data=np.concatenate([batch, batch[:1]]))
    np.testing.assert_allclose(every["prob"][:3], out["prob"], rtol=1e-5, atol=1e-6)
    net.params["fc_nsfw"][1].data[...] = 0  # pycaffe: edits to params change the next forward
    bias_free = net.forward(data=batch)["prob"]
    assert not np.allclose(bias_free, out["prob"])
    if not __import__("torch").cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            caffe.set_mode_gpu()
