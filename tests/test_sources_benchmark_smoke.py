"""The sources benchmark runs at its small size and prints its figures (no timing asserted)."""

from __future__ import annotations

import os
import re
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


def _billions(*counts: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.sources", "--size", "small",
                           "--part", "billions", *counts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_billions_benchmark_runs() -> None:
    """Planning many tars (a brace range, a folder), samples per tar, and tars read over S3."""
    out = _billions("--tars", "50", "--pairs", "2", "--s3-tars", "4", "--ray-shards", "0")
    assert "plan 50 tars of 1 sample (brace range)" in out
    assert "plan 50 tars of 1 sample (folder)" in out
    assert "plan 2 tars of 5,000 samples" in out and "5,000 vs 5 samples per tar" in out
    read = re.search(r"tar objects read: (\d+) of 4 \(target <= 2\); GETs of tar objects (\d+)",
                     out)
    assert read, out
    assert int(read[2]) >= int(read[1])  # every object read took one GET at least
    assert "Ray" not in out


@pytest.mark.ray
def test_billions_ray_case_runs() -> None:
    """The driver's time per shard on a 2-node local Ray cluster, at 30 shards."""
    pytest.importorskip("ray")
    out = _billions("--tars", "0", "--pairs", "0", "--s3-tars", "0", "--ray-shards", "30")
    assert "Ray, 2 nodes, 30 shards of 1 item" in out and "ms CPU and" in out
