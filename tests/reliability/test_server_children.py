"""Children of the fork server die with it from the moment they are forked
(``engines.server_children``), and the guard does not reach a fork made by a worker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from faultkit import env

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

# Plays the server: imports the guard, forks a "worker" that reports its parent-death signal and
# forks a "grandchild" that reports its own (a fork made by a worker is not the guard's).
SCRIPT = r"""
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)

def pdeathsig():
    value = ctypes.c_int()
    libc.prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
    return value.value

import gristmill.engines.server_children  # noqa: F401  (installs the hook here)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, f"worker {pdeathsig()}\n".encode())
    grand = os.fork()
    if grand == 0:
        os.write(w, f"grandchild {pdeathsig()}\n".encode())
        os._exit(0)
    os.waitpid(grand, 0)
    os._exit(0)
os.waitpid(pid, 0)
os.close(w)
sys.stdout.write(os.read(r, 1000).decode())
"""


def test_a_forked_worker_dies_with_the_server_and_its_own_forks_are_untouched() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:2]) == ["grandchild 0", "worker 9"]  # 9: SIGKILL




def test_the_guard_exits_a_child_whose_server_already_died() -> None:
    """The child checks its parent right after setting the signal: a dead server means exit."""
    code = ("import os, sys\n"
            "import gristmill.engines.server_children as g\n"
            "real = os.getppid\n"
            "os.getppid = lambda: -1  # as seen by a child whose server died before the hook\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(3)  # not reached: the hook exits first, with 0\n"
            "_, status = os.waitpid(pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


# A driver that exits while the fork server forks a child for it: the child finds its job pipe
# closed. Asked of the real fork server with the real preload list; its stderr is the terminal's.
ORPHAN = r"""
import os, sys, time
import multiprocessing.forkserver as fs
from gristmill.engines.forkserver import context
context()  # sets the preload list (the guard first)
status_r, data_w = fs._forkserver.connect_to_new_process([])
pid = fs.read_signed(status_r)
os.close(data_w)  # the driver leaves before writing the child's job
code = fs.read_signed(status_r)
print(pid > 0, code)
"""


def test_a_child_whose_driver_left_before_its_job_exits_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-c", ORPHAN], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1"]  # the child ran and failed: EOF reading its job
    assert "Traceback" not in done.stderr and "EOFError" not in done.stderr, done.stderr


# The server's quick exit (``engines.preload``): its children inherit its exit handlers, so a
# child that runs them shows whether the server registered it (0) or not (7).
QUICK_EXIT = r"""
import atexit, os
from gristmill.engines.forkserver import context

def run_handlers():
    atexit._run_exitfuncs()  # the quick exit leaves here, with 0
    os._exit(7)

if __name__ == "__main__":
    child = context().Process(target=run_handlers)
    child.start()
    child.join()
    print(child.exitcode)
"""


def test_the_fork_server_leaves_without_its_teardown(tmp_path: object) -> None:
    script = f"{tmp_path}/quick_exit.py"
    with open(script, "w") as f:
        f.write(QUICK_EXIT)
    done = subprocess.run([sys.executable, script], env=env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def test_the_quick_exit_is_the_fork_servers_only() -> None:
    """Ray's actors import the preload module too: their exit status and handlers stay theirs."""
    done = subprocess.run([sys.executable, "-c", "import gristmill.engines.preload\n"
                                                 "raise SystemExit(3)"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
