"""What the driver keeps about a model between runs (``models.memo``): when it is used, when it is
made again, and that a driver using it imports no framework."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gristmill import models
from gristmill.job import gpu_driver_present, resolve_devices
from gristmill.models import memo
from gristmill.models.memo import Memo, key_of
from gristmill.spec import ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript's notice


def scripted(path: Path, output: str) -> ModelSpec:
    """A TorchScript file whose one output is named ``output``."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {self.name: x.mean(dim=(2, 3))}

    torch.jit.save(torch.jit.script(Named(output)), str(path))
    return ModelSpec(ref=str(path))


def test_a_changed_model_file_is_described_again(tmp_path: Path) -> None:
    kept = str(tmp_path / "kept")
    spec = scripted(tmp_path / "model.pt", "first")
    assert models.describe(spec, models.ModelCache(memo=Memo(kept))).outputs == ("first",)
    assert Memo(kept).description(spec, "image").outputs == ("first",)
    spec = scripted(tmp_path / "model.pt", "second")  # the same path, new content
    assert Memo(kept).description(spec, "image") is None
    assert models.describe(spec, models.ModelCache(memo=Memo(kept))).outputs == ("second",)
    assert len(os.listdir(kept)) == 2


def test_an_unreadable_record_is_made_again(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    spec = scripted(tmp_path / "model.pt", "out")
    models.describe(spec, models.ModelCache(memo=Memo(str(kept))))
    record = kept / key_of(spec) / memo.RECORD
    record.write_text('{"version": 1, "described": {"image": {"outp')  # cut short
    assert Memo(str(kept)).description(spec, "image") is None
    assert models.describe(spec, models.ModelCache(memo=Memo(str(kept)))).outputs == ("out",)
    assert json.loads(record.read_text())["described"]["image"]["outputs"] == ["out"]


def test_the_newest_models_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo, "KEEP", 2)
    kept = tmp_path / "kept"
    specs = [scripted(tmp_path / f"model{i}.pt", f"out{i}") for i in range(3)]
    for i, spec in enumerate(specs):
        models.describe(spec, models.ModelCache(memo=Memo(str(kept))))
        os.utime(kept / key_of(spec), (i + 1.0, i + 1.0))  # made one after the other
    models.describe(specs[2], models.ModelCache(memo=Memo(str(kept))))  # read: still newest
    assert sorted(os.listdir(kept)) == sorted(key_of(s) for s in specs[1:])


def test_where_models_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(memo.ENV, str(tmp_path))
    assert memo.default_folder() == str(tmp_path / "models")
    for off in ("off", ""):
        monkeypatch.setenv(memo.ENV, off)
        assert memo.default_folder() is None and models.open_memo() is None
    monkeypatch.delenv(memo.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert memo.default_folder() == str(tmp_path / "xdg" / "gristmill" / "models")


def test_a_machine_without_a_gpu_driver_needs_no_torch_for_auto(tmp_path: Path) -> None:
    assert not gpu_driver_present((str(tmp_path / "no-such-device"),))
    assert gpu_driver_present((str(tmp_path),))
    if gpu_driver_present():
        pytest.skip("this machine has a GPU driver: torch decides")
    assert resolve_devices("auto") == ["cpu"]
    code = ("import sys; from gristmill.job import resolve_devices; "
            "assert resolve_devices('auto') == ['cpu']; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


@pytest.mark.slow  # two whole jobs
def test_a_second_run_imports_no_framework_in_the_driver(small_tree, tmp_path: Path) -> None:
    root, _ = small_tree
    code = f"""
import json, sys
import gristmill
out = sys.argv[1]
gristmill.run([{str(root)!r}], out, progress=False, shard_size=8)
with gristmill.open(out) as result:
    names, features = list(result.names), result["features"][:].tolist()
print(json.dumps({{"torch": "torch" in sys.modules, "names": names, "features": features}}))
"""
    env = dict(os.environ, GRISTMILL_CACHE=str(tmp_path / "cache"))
    runs = []
    for out in ("first", "second"):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / out)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    assert runs[0]["torch"] and not runs[1]["torch"]
    assert runs[0]["names"] == runs[1]["names"] and len(runs[0]["names"]) == 28
    assert np.array_equal(np.array(runs[0]["features"]), np.array(runs[1]["features"]))
