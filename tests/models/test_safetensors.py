"""safetensors weights: mapped (shared pages, no private copy), used by factory models, and a
pickle where safetensors are required refused in one line without being unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from jobhelp import cli
from safetensors.torch import save_file

import gristmill
from gristmill.errors import SpecError
from gristmill.models.weightfile import map_tensors

FLAGS = ("--shard-size", "16", "--batch-size", "8", "--workers", "1", "--threads", "1",
         "--loaders", "1", "--device", "cpu", "--no-progress")


def _private_dirty_kb() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))


def test_mapped_tensors_are_exact_and_not_copied(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    big = torch.arange(16 * 2**20, dtype=torch.float32)  # 64 MB
    save_file({"big": big, "small": torch.ones(2, 3, dtype=torch.bfloat16)}, str(path))
    # flushed first: pages of a file just written are dirty in the page cache, and smaps counts a
    # dirty page cache page mapped by one process as Private_Dirty even though it is no copy
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    before = _private_dirty_kb()
    tensors = map_tensors(str(path))
    assert float(tensors["big"].sum()) == float(big.sum())  # every page read
    assert _private_dirty_kb() - before < 16 * 1024  # a copy would add 64 MB
    assert tensors["small"].dtype == torch.bfloat16 and tensors["small"].shape == (2, 3)


class _Trap:
    """Unpickling this creates a file: the test's proof that nothing was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow  # the CLI in its own interpreter
def test_a_pickle_named_safetensors_is_refused_unread(small_tree, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    fake = tmp_path / "weights.safetensors"
    fake.write_bytes(pickle.dumps({"x": _Trap(str(marker))}, protocol=4))
    root, _ = small_tree
    done = cli("run", str(root), "-o", str(tmp_path / "out"), "--model",
               "models_for_tests:tiny_cnn", "--weights", str(fake), "--trusted-pickle", *FLAGS)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "is a pickle, not safetensors" in done.stderr
    assert not marker.exists()
    torch.save({"x": torch.ones(1)}, str(fake))  # the zip form of torch.save is refused too
    with pytest.raises(SpecError, match="is a pickle"):
        map_tensors(str(fake))


@pytest.mark.slow  # two whole jobs
def test_factory_with_safetensors_weights_equals_the_same_state_dict(small_tree,
                                                                    tmp_path: Path) -> None:
    from models_for_tests import TinyCNN

    torch.manual_seed(3)
    state = {k: torch.randn_like(v) * 0.2 for k, v in TinyCNN().state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, str(tmp_path / "w.pth"))
    root, _ = small_tree
    results = {}
    for name in ("w.safetensors", "w.pth"):
        out = tmp_path / f"out-{name}"
        done = cli("run", str(root), "-o", str(out), "--model", "models_for_tests:tiny_cnn",
                   "--weights", str(tmp_path / name), *FLAGS)
        assert done.returncode == 0, done.stderr
        with gristmill.open(str(out)) as result:
            results[name] = result["output"][:]
    np.testing.assert_array_equal(results["w.safetensors"], results["w.pth"])
    assert np.abs(results["w.pth"]).max() > 0
