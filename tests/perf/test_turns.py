"""Turns on the cores (engines/turns.py): at most ``count`` holders at once, real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from gristmill.engines import turns

CTX = mp.get_context("fork")  # the children only lock files and sleep


def _take_and_log(folder: str, log: str, rounds: int) -> None:
    mine = turns.Turns(folder, 2)
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
        procs = [CTX.Process(target=_take_and_log, args=(folder, log, 4)) for _ in range(4)]
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


def _hold(folder: str, held: object) -> None:
    with turns.Turns(folder, 2).take():
        held.set()  # type: ignore[attr-defined]
        time.sleep(600)


def test_a_killed_holder_gives_its_turn_back(tmp_path: Path) -> None:
    folder = turns.make(2)
    holders: list = []
    try:
        for _ in range(2):
            held = CTX.Event()
            holders.append(CTX.Process(target=_hold, args=(folder, held), daemon=True))
            holders[-1].start()
            assert held.wait(10)
        waiter_held = CTX.Event()
        holders.append(CTX.Process(target=_hold, args=(folder, waiter_held), daemon=True))
        holders[-1].start()
        assert not waiter_held.wait(0.5)  # both turns are taken
        os.kill(holders[1].pid, signal.SIGKILL)  # no chance to unlock: the kernel does it
        assert waiter_held.wait(10)  # whichever turn is freed, a waiter takes it
    finally:
        for p in holders:
            p.kill()
            p.join(5)
        turns.remove(folder)
