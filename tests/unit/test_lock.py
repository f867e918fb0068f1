"""One driver per OUT: ``ledger.lock_out`` / ``ledger.holder`` with real processes and flocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill import ledger
from gristmill.errors import SpecError

HOLD = ("import sys, time\n"
        "from gristmill import ledger\n"
        "with ledger.lock_out(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n")


def hold(out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_live_holder_is_named_and_refuses_a_second_driver(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = hold(out)
    try:
        info = ledger.holder(str(out))
        assert info is not None and info["pid"] == proc.pid
        assert info["host"] == socket.gethostname() and info["started"]
        with pytest.raises(SpecError, match=rf"in use by .*pid {proc.pid}, started"), \
                ledger.lock_out(str(out)):
            pass
    finally:
        proc.kill()
        proc.wait()
    assert ledger.holder(str(out)) is None  # the kernel dropped the SIGKILLed holder's lock
    with ledger.lock_out(str(out)) as me:
        assert me["pid"] == os.getpid() and ledger.holder(str(out)) == me
    assert ledger.holder(str(out)) is None


def test_lock_out_leaves_no_folder_behind_when_nothing_was_written(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with ledger.lock_out(str(out)):
        assert (out / ledger.LOCK_FILE).exists()
    assert not out.exists()
    kept = tmp_path / "kept"
    with ledger.lock_out(str(kept)):
        (kept / "job.json").write_text("{}")
    assert (kept / "job.json").exists()


def test_no_holder_for_a_folder_never_locked(tmp_path: Path) -> None:
    assert ledger.holder(str(tmp_path)) is None
