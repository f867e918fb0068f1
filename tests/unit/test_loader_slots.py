"""The loader moves pixels through shared memory: only small messages cross process borders."""

import multiprocessing as mp
import os
import pickle

import numpy as np
from PIL import Image

from gristmill.loader.messages import STOP, BatchTask
from gristmill.loader.process import ImageFill, loader_main
from gristmill.loader.ring import RingSpec, SlotRing
from gristmill.spec import Preprocess
from gristmill.transforms import load_into

PRE = Preprocess(resize=(224, 224), crop=None, mean=(0, 0, 0), std=(1, 1, 1),
                 channel_order="RGB", layout="NCHW")


def test_a_loader_process_fills_slots_and_sends_only_slot_ids(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray((rng.random((50, 60, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(bytes(path))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    paths.insert(2, bytes(tmp_path / "bad.jpg"))
    ctx = mp.get_context("spawn")
    spec = RingSpec.new(slots=2, batch=8, item_shape=(3, 224, 224))
    with SlotRing(spec, create=True) as ring:
        tasks, free, ready = ctx.Queue(), ctx.Queue(), ctx.Queue()
        free.put(1)
        proc = ctx.Process(target=loader_main, args=(spec, ImageFill(PRE, 10**8), tasks, free,
                                                     ready, os.getpid()))
        proc.start()
        tasks.put(BatchTask((0, 0), tuple(paths)))
        filled = ready.get(timeout=60)
        tasks.put(STOP)
        proc.join(timeout=30)
        assert proc.exitcode == 0
        assert filled.slot == 1 and filled.ok == (0, 1, 3, 4, 5, 6)
        assert [e[:2] for e in filled.errors] == [(2, "decode")]
        expected = np.empty((3, 224, 224), np.float32)
        for row, index in enumerate(filled.ok):
            load_into(paths[index], expected, PRE, 10**8)
            np.testing.assert_array_equal(ring.view(1)[row], expected)
        batch_bytes = ring.view(1).nbytes
        # the slot holds ~5 MB of pixels; the message that announced it is tiny
        assert batch_bytes > 4_000_000 and len(pickle.dumps(filled)) < 1_000
    assert not os.path.exists(f"/dev/shm/{spec.name}")


def test_a_ring_attached_elsewhere_sees_the_same_memory():
    spec = RingSpec.new(slots=3, batch=2, item_shape=(4,))
    with SlotRing(spec, create=True) as owner:
        other = SlotRing(spec, create=False)
        owner.view(2)[:] = 5
        assert (other.view(2) == 5).all()
        other.close()
        assert os.path.exists(f"/dev/shm/{spec.name}")
    assert not os.path.exists(f"/dev/shm/{spec.name}")


def test_closing_a_ring_unlinks_the_semaphores_named_after_it():
    """A pool whose stop failed before unlinking its queues' semaphores leaves no name behind
    once its owner closes the ring."""
    from gristmill.loader import shm

    ring = SlotRing(RingSpec.new(2, 1, (3, 4, 4)), create=True)
    try:
        queue = shm.NamedContext(f"{ring.spec.name}-1").Queue()  # three named semaphores
        named = {n for n in os.listdir(shm.SHM_DIR) if ring.spec.name in n}
        assert len(named) == 4, named  # the segment and the queue's semaphores
        queue.close()
        ring.close()
        assert not [n for n in os.listdir(shm.SHM_DIR) if ring.spec.name in n]
    finally:
        shm.sweep(ring.spec.name)
