"""The bad-specs catalog: each exits 2 with one line on stderr, before any worker starts."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from faultkit import TINY, run
from PIL import Image

# each case is the CLI in its own interpreter (seconds of imports); the refusals themselves are
# unit-tested in tests/unit/test_spec.py and through describe in tests/models
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec-images")
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 80, 20, 200)).save(root / f"{i}.jpg")
    return root


def refused(*args: str, match: str, **kw) -> str:
    done = run(*args, timeout=60, **kw)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("gristmill: error:") and match in lines[0], lines[0]
    return lines[0]


def no_worker_ran(out: Path) -> None:
    assert not list(out.glob("shards/*.h5")), "a worker ran"


def test_missing_model_file(images, tmp_path):
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--model", str(tmp_path / "m.onnx"),
            match="does not exist")


@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".pt2"])
def test_corrupt_model_file(images, tmp_path, suffix):
    model = tmp_path / f"model{suffix}"
    model.write_bytes(b"\x08\x01garbage, not a model" * 50)
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--model", str(model),
            match=str(model))
    no_worker_ran(tmp_path / "o")


def test_unknown_output_name(images, tmp_path):
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--outputs", "nope", match="nope")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_must_be_positive(images, tmp_path, size):
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--batch-size", size,
            match="--batch-size")


def test_gpu_workers_without_cuda(images, tmp_path):
    args = [a for a in TINY if a not in ("--device", "cpu")]
    refused(str(images), "-o", str(tmp_path / "o"), *args, "--device", "cuda", "--workers", "2",
            match="--device cuda")


def test_out_holds_another_job(images, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"identity": {"model": "something else"}}))
    refused(str(images), "-o", str(out), *TINY, match="different job")
    assert json.loads((out / "job.json").read_text())["identity"] == {"model": "something else"}


def test_missing_source(tmp_path):
    refused(str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), *TINY, match="does not exist")


@pytest.mark.skipif(importlib.util.find_spec("gristmill.models.caffe") is None
                    if os.path.isdir(Path(__file__).parents[2] / "src/gristmill/models/caffe")
                    or os.path.exists(Path(__file__).parents[2] / "src/gristmill/models/caffe.py")
                    else True, reason="gristmill.models.caffe is not in this tree yet")
def test_caffe_unsupported_layer(images, tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "n"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n'
                     'input_dim: 8\nlayer { name: "x" type: "NoSuchLayer" bottom: "data" '
                     'top: "x" }\n')
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--model", str(proto),
            match="NoSuchLayer")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_weights_refused_without_trusted_pickle(images, tmp_path):
    import torch

    weights = tmp_path / "evil.pt"
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": _Payload(str(marker))}, weights)
    refused(str(images), "-o", str(tmp_path / "o"), *TINY, "--weights", str(weights),
            match="evil.pt")
    assert not marker.exists(), "the pickle payload ran"
    # the same file with --trusted-pickle runs it: proof that the refusal above is what saved us
    run(str(images), "-o", str(tmp_path / "o2"), *TINY, "--weights", str(weights),
        "--trusted-pickle", timeout=60)
    assert marker.exists()
