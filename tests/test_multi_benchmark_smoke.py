"""``python -m benchmarks.multi`` runs end to end at its small size (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_multi_benchmark_runs_and_prints_the_table() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.multi", "--size", "small",
                           "--part", "two"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| two | one pass |" in done.stdout and "| two | two runs |" in done.stdout
    assert (ROOT / ".bench" / "multi.md").read_text().strip() == done.stdout.strip()
