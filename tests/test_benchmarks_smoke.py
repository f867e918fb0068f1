"""The benchmark suite runs end to end at its small size and prints ratios (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every benchmark case, the Ray cluster's included: minutes

ROOT = Path(__file__).resolve().parent.parent


def test_small_benchmarks_run_and_print_ratios() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--size", "small"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gristmill ÷ case" in done.stdout
    for case in ("limit: combined bound", "seed naive", "seed tuned", "DataLoader", "gristmill",
                 "scale, plan", "(c) caffe open_nsfw", "OpenCV DNN",
                 "training loader vs DataLoader", "Ray engine, 2 nodes",
                 "start-up, `gristmill run`"):
        assert case in done.stdout, case
    assert "×" in done.stdout
    assert (ROOT / ".bench" / "results.md").exists()
