"""Helpers for tests that run whole jobs: the standard options and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BAD = {"bad/truncated.jpg": "truncated", "bad/empty.jpg": "empty", "bad/text.jpg": "text"}
RUN = dict(outputs=("features", "logits"), shard_size=8, batch_size=8, progress=False)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cli(*args: str, timeout: float = 300, prefix: tuple[str, ...] | list[str] = (),
        **kw) -> subprocess.CompletedProcess:
    """Run ``python -m gristmill ARGS`` with the test helpers importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    env.update(kw.pop("env", {}))
    return subprocess.run([*prefix, sys.executable, "-m", "gristmill", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)
