"""Turns on the cores (engines/turns.py): at most ``count`` holders at once, real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from gristmill.engines import turns

CTX = mp.get_context("fork")  # the children only lock files and sleep


def _take_and_log(folder: str, index: int, log: str, rounds: int) -> None:
    mine = turns.Turns(folder, 2, index)
    for _ in range(rounds):
        with mine.take():
            with open(log, "a") as f:
                f.write(f"{time.monotonic()} +1\n")
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"{time.monotonic()} -1\n")


def test_at_most_count_workers_hold_a_turn_and_all_of_them_are_used(tmp_path: Path) -> None:
    folder = turns.make(2)
    log = str(tmp_path / "log")
    try:
        procs = [CTX.Process(target=_take_and_log, args=(folder, i, log, 4)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        turns.remove(folder)
    assert not os.path.exists(folder)
    events = sorted((float(t), int(d)) for t, d in (line.split() for line in open(log)))
    assert len(events) == 4 * 4 * 2
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2


def _hold(folder: str, index: int, held: object) -> None:
    with turns.Turns(folder, 2, index).take():
        held.set()  # type: ignore[attr-defined]
        time.sleep(600)


def test_a_killed_holder_gives_its_turn_back(tmp_path: Path) -> None:
    folder = turns.make(2)
    holders = []
    try:
        for i in range(2):
            held = CTX.Event()
            holders.append(CTX.Process(target=_hold, args=(folder, i, held), daemon=True))
            holders[-1].start()
            assert held.wait(10)
        waiter_held = CTX.Event()
        waiter = CTX.Process(target=_hold, args=(folder, 2, waiter_held), daemon=True)
        waiter.start()
        assert not waiter_held.wait(0.5)  # both turns are taken
        os.kill(holders[0].pid, signal.SIGKILL)  # no chance to unlock: the kernel does it
        assert waiter_held.wait(10)
    finally:
        for p in [*holders, waiter]:
            p.kill()
            p.join(5)
        turns.remove(folder)
