"""What start-up imports (no timing): each process on the way to the first batch imports the job's
framework only.

The driver's own modules (command line, API, job preparation, local engine) import no framework;
the fork server imports the job's backend and framework (``models.worker_modules``) and the worker
code (``engines/preload.py``), never another backend's (Caffe's protobuf reader, onnxruntime,
``transformers``), and nothing imports torch's lazy stacks (``torch._dynamo``, ``torch._inductor``,
``torch.onnx``, sympy), each of which costs seconds. ``gristmill run`` starts its fork server
before it imports numpy, h5py or the job's own modules, so the server's torch import overlaps
theirs. Every check runs in a fresh interpreter that imports what that process imports, in the
same order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

DRIVER = ("gristmill.cli", "gristmill.api", "gristmill.driver", "gristmill.job",
          "gristmill.engines.local_backend", "gristmill.engines.local", "gristmill.models")
OTHER_BACKENDS = {"gristmill.caffe": "caffe", "google.protobuf": "caffe", "onnxruntime": "onnx",
                  "transformers": "hf"}
LAZY_TORCH = ("torch._dynamo", "torch._inductor", "torch.onnx", "sympy")
# what the driver of `gristmill run` imports only once its fork server has started
JOB_STACK = ("numpy", "h5py", "pyarrow", "PIL", "torch", "gristmill.driver", "gristmill.job",
             "gristmill.outdir", "gristmill.sources", "gristmill.plan", "gristmill.sinks.base",
             "gristmill.engines.local", "gristmill.engines.runner", "gristmill.engines.ray")

IMPORT = r"""
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


# the command line up to the fork server's start: ``forkserver.warm`` reports what the driver
# holds then and ends the process (the job itself is not the point)
AT_WARM = r"""
import json, os, sys
from gristmill.engines import forkserver

def warm(modules=()):
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)

forkserver.warm = warm
from gristmill.cli import main
sys.exit(main(sys.argv[1:]))
"""


def imported(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules`` in order."""
    return _modules_of(IMPORT, *modules)


def _modules_of(program: str, *args: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    done = subprocess.run([sys.executable, "-c", program, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def server_modules(ref: str) -> set[str]:
    """What the fork server imports for a job of ``ref``, in its order (``forkserver.context``)."""
    from gristmill.engines import forkserver
    from gristmill.models import worker_modules

    return imported(forkserver.GUARD, *worker_modules(ref), forkserver.PRELOAD)


def packages(modules: set[str], names: object) -> list[str]:
    return [n for n in names if n in modules]  # type: ignore[attr-defined]


def test_the_driver_modules_import_no_framework() -> None:
    driver = imported(*DRIVER)
    assert "torch" not in driver
    assert not packages(driver, OTHER_BACKENDS)


@pytest.mark.parametrize("ref", ["efficientnet-lite0", "mypkg.nets:resnet50", "net.pt2"])
def test_a_torch_job_preloads_torch_and_no_other_backend(ref: str) -> None:
    server = server_modules(ref)
    assert {"torch", "gristmill.models.torch", "gristmill.engines.runner"} <= server
    assert not packages(server, OTHER_BACKENDS), "another backend's framework in the fork server"
    assert not packages(server, LAZY_TORCH)
    # the driver describes the model with the same backend: still nothing else
    driver = imported(*DRIVER, "gristmill.models.torch")
    assert not packages(driver, OTHER_BACKENDS) and not packages(driver, LAZY_TORCH)


def test_an_onnx_job_preloads_onnxruntime_and_no_torch() -> None:
    pytest.importorskip("onnxruntime")
    server = server_modules("net.onnx")
    assert {"onnxruntime", "gristmill.models.onnx", "gristmill.engines.runner"} <= server
    assert "torch" not in server
    assert "torch" not in imported(*DRIVER, "gristmill.models.onnx")


def test_a_caffe_job_preloads_the_caffe_graph() -> None:
    server = server_modules("deploy.prototxt")
    assert {"torch", "gristmill.caffe.net", "gristmill.models.caffe"} <= server
    assert not packages(server, LAZY_TORCH)


@pytest.mark.parametrize("fmt", ["hdf5", "parquet", "npy"])
def test_run_starts_its_fork_server_before_the_job_stack(fmt: str, tmp_path: Path) -> None:
    """Checked, OUT locked, fork server started: all before the driver imports numpy, h5py or the
    job's modules (their 0.1-0.2 s then overlap the server's torch import)."""
    (tmp_path / "photos").mkdir()
    held = _modules_of(AT_WARM, "run", str(tmp_path / "photos"), "-o", str(tmp_path / "out"),
                       "--format", fmt)
    assert "gristmill.engines.local_backend" in held  # the hook ran where the run starts it
    assert not packages(held, JOB_STACK)
