"""A spawned loader whose parent dies before handing it its job leaves without a word.

The parent here is a small Python process that spawns one child and dies right after the child's
interpreter is started, before writing the child's job into its pipe: the moment a worker killed
with its fork server leaves a loader it was restarting. Python's own spawn prints the child's
``EOFError`` traceback on the terminal they share (the first test shows the window is real); a
loader pool's context (``shm.NamedContext``, through ``launch``) prints nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PARENT = textwrap.dedent("""
    import multiprocessing, os, sys
    from multiprocessing import util
    from gristmill.loader import shm

    spawned = util.spawnv_passfds
    def spawn_then_die(path, args, passfds):
        pid = spawned(path, args, passfds)
        if "resource_tracker" not in str(args):  # the child, not Python's helper
            print(pid, flush=True)
            os._exit(0)  # as a SIGKILL would: the child's job is never written
        return pid
    util.spawnv_passfds = spawn_then_die

    def body():
        pass

    if __name__ == "__main__":
        if sys.argv[1] == "python":
            ctx = multiprocessing.get_context("spawn")
        else:
            ctx = shm.NamedContext("gristmill-test-launch-" + str(os.getpid()))
        ctx.Process(target=body).start()
""")


def orphan_stderr(tmp_path, kind: str) -> tuple[int, str]:
    """Run the parent; stderr once every process holding it (the child too) has exited."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    done = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.stdout.strip().isdigit(), done.stderr  # the child was started
    return done.returncode, done.stderr


def test_pythons_spawn_child_prints_a_traceback_when_its_parent_dies_early(tmp_path):
    code, stderr = orphan_stderr(tmp_path, "python")
    assert code == 0
    assert "EOFError" in stderr and "Traceback" in stderr


def test_a_loader_child_whose_parent_died_early_exits_silently(tmp_path):
    code, stderr = orphan_stderr(tmp_path, "gristmill")
    assert code == 0
    assert stderr == ""


@pytest.mark.parametrize("kind", ["loader pool", "worker fallback"])
def test_a_guarded_child_runs_its_target(tmp_path, kind):
    """The launch path starts real work, in a loader pool's context and in the workers' spawn
    fallback: a child that answers through a queue and writes a file."""
    from gristmill.engines import forkserver
    from gristmill.loader import shm

    name = f"gristmill-test-launch-ok-{os.getpid()}"
    ctx = shm.NamedContext(name) if kind == "loader pool" else forkserver.spawn_context()
    q = ctx.Queue()
    p = ctx.Process(target=_echo, args=(q, str(tmp_path / "out.txt")))
    try:
        p.start()
        assert q.get(timeout=60) is True  # it ran through child_main
        p.join(timeout=60)
        assert p.exitcode == 0
        assert (tmp_path / "out.txt").read_text() == "done"
    finally:
        if isinstance(ctx, shm.NamedContext):
            ctx.unlink()


def _echo(q, path: str) -> None:
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        q.put(b"child_main" in f.read())
    with open(path, "w") as f:
        f.write("done")
