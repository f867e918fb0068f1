"""gristmill.Loader with real loader processes: order, content, resume, failures, cleanup."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from loader_hooks import slow_hook

import gristmill
from gristmill.loader.training import Loader

AUG = gristmill.Augment(size=(24, 24), scale=(0.3, 1.0))


def make(root: Path, **kw: object) -> Loader:
    opts: dict = {"batch_size": 4, "augment": AUG, "seed": 5, "workers": 2, "output": "numpy"}
    return Loader(str(root), **{**opts, **kw})


def epoch(loader: Loader) -> list[gristmill.loader.training.Batch]:
    return list(loader)


def flat(batches: list) -> tuple[list[int], np.ndarray]:
    return ([i for b in batches for i in b.indices.tolist()],
            np.concatenate([b.images for b in batches]))


def segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"gristmill-{os.getpid()}-")}


def test_epochs_are_complete_labelled_deterministic_and_reshuffled(labeled: Path) -> None:
    with make(labeled) as loader:
        assert len(loader) == 8 and loader.classes[0] == "astronaut"
        first = epoch(loader)
        again = epoch(loader)  # same epoch again: same order, same pixels
        loader.set_epoch(1)
        other = epoch(loader)
    idx, pixels = flat(first)
    assert sorted(idx) == list(range(32))
    assert pixels.shape == (32, 3, 24, 24) and pixels.dtype == np.float32
    for b in first:
        assert [loader.classes[c] for c in b.labels] == [
            Path(loader.inputs.name(i)).parent.name for i in b.indices]
    idx2, pixels2 = flat(again)
    assert idx2 == idx and np.array_equal(pixels, pixels2)
    idx3, _ = flat(other)
    assert idx3 != idx and sorted(idx3) == list(range(32))


def test_torch_output_eval_mode_and_pin_memory_without_cuda(labeled: Path) -> None:
    import torch

    pre = gristmill.Preprocess(resize=20, crop=(16, 16))
    with pytest.warns(UserWarning, match="pin_memory"):
        loader = Loader(str(labeled), batch_size=16, preprocess=pre, shuffle=False,
                        workers=1, pin_memory=True, drop_last=True)
    with loader:
        images, labels = next(iter(loader))
    assert isinstance(images, torch.Tensor) and images.shape == (16, 3, 16, 16)
    assert labels.dtype == torch.int64 and labels.tolist() == [0] * 8 + [1] * 8


def test_resume_from_state_dict_yields_exactly_the_rest(labeled: Path) -> None:
    with make(labeled, rank=1, world_size=2) as loader:
        loader.set_epoch(3)
        full = epoch(loader)
        loader.set_epoch(4)  # a new epoch from its start; then back to 3, stopped after 2
        loader.set_epoch(3)
        it = iter(loader)
        head = [next(it), next(it)]
        state = loader.state_dict()
        it.close()
    assert state["epoch"] == 3 and state["position"] == 2
    with make(labeled, rank=1, world_size=2) as resumed:
        resumed.load_state_dict(state)
        resumed.set_epoch(3)  # as a training loop would: the restored epoch keeps its place
        tail = epoch(resumed)
    idx_full, px_full = flat(full)
    idx_got, px_got = flat(head + tail)
    assert idx_got == idx_full and len(idx_full) == 16
    assert np.array_equal(px_got, px_full)
    with make(labeled, seed=6) as other, pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_break_then_iterate_continues_where_it_stopped(labeled: Path) -> None:
    with make(labeled, workers=1) as loader:
        for i, _ in enumerate(loader):
            if i == 2:
                break
        rest = epoch(loader)
        assert len(rest) == 5 and loader.state_dict()["position"] == 8
        first, second = iter(loader), iter(loader)
        next(first)
        next(second)  # takes over, and continues after the batch `first` delivered
        with pytest.raises(RuntimeError, match="one at a time"):
            next(first)
        assert len(list(second)) == 6


def test_killed_loader_changes_nothing(labeled: Path) -> None:
    slow = gristmill.Augment(size=(24, 24), scale=(0.3, 1.0), hook=slow_hook)
    with make(labeled, augment=slow) as loader:
        calm = flat(epoch(loader))
    with make(labeled, augment=slow, start_method="spawn") as loader:
        it = iter(loader)
        got = [next(it), next(it)]
        os.kill(loader.pids[0], signal.SIGKILL)
        got += list(it)
        assert loader.restarts >= 1
    idx, pixels = flat(got)
    assert idx == calm[0] and np.array_equal(pixels, calm[1])


def test_corrupt_items_are_skipped_and_named(labeled: Path, tmp_path: Path) -> None:
    for name in ("coffee", "rocket"):
        (tmp_path / name).mkdir()
        for k in range(3):
            (tmp_path / name / f"{k}.jpg").write_bytes((labeled / name / f"{k}.jpg").read_bytes())
    (tmp_path / "coffee" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    (tmp_path / "rocket" / "empty.jpg").write_bytes(b"")
    with make(tmp_path, batch_size=3, shuffle=False) as loader:
        batches = epoch(loader)
    assert sum(len(b) for b in batches) == 6 and len(batches) == 3  # ranks keep step counts
    assert sorted(Path(n).name for n, _, _ in loader.errors) == ["bad.jpg", "empty.jpg"]
    assert loader.skipped == 2


def test_no_shared_memory_or_process_left(labeled: Path) -> None:
    loader = make(labeled, workers=1)
    next(iter(loader))
    pids, before = loader.pids, segments()
    assert before
    del loader
    gc.collect()  # garbage collection alone frees everything
    assert not segments()
    assert all(not _alive(p) for p in pids)
    with pytest.raises(KeyboardInterrupt), make(labeled, workers=1) as loader:
        for _ in loader:
            raise KeyboardInterrupt  # as Ctrl-C in the training loop
    assert not segments() and not any(_alive(p) for p in loader.pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_ctrl_c_in_a_training_process_leaves_nothing(labeled: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    # the training loop takes its first batch, says so, and then waits on its stdin, which the
    # test keeps open and never writes: Ctrl-C lands mid-epoch, with the loaders running, however
    # busy the machine. Python's own SIGINT handler, as in a terminal, even when this test runs
    # with SIGINT ignored (a background job of a script), which its children would inherit.
    script = (
        "import signal, sys, gristmill\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"loader = gristmill.Loader({str(labeled)!r}, batch_size=2, workers=2, output='numpy')\n"
        "for batch in loader:\n"
        "    print(*loader.pids, flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = tmp_path / "stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids) and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # its stdin still open: only the signal can end the loop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()
    err = log.read_text()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err and "leaked" not in err, err
    assert _until(lambda: not any(_alive(p) for p in pids), 30), [p for p in pids if _alive(p)]
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"gristmill-{proc.pid}-")]


def _until(condition, timeout: float) -> bool:
    """Whether ``condition()`` holds within ``timeout`` seconds (polled)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
