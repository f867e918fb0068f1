"""The sources benchmark runs at its small size and prints its figures (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a benchmark in its own interpreter

ROOT = Path(__file__).resolve().parent.parent


def test_source_planning_benchmark_runs() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.sources", "--size", "small",
                           "--part", "plan"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plan 2,000 samples in 20 tars" in done.stdout
    assert "plan 2,000 samples in 20 parquet" in done.stdout
    assert "MB max RSS" in done.stdout
