"""``gristmill.Loader``: preloading, augmenting, DDP-sharded, resumable batches for training loops.

Runs in the training process; loader processes (``LoaderPool``) decode and augment into shared-
memory slots ahead of the consumer, in any order; batches are delivered strictly in the epoch's
order. The order is a pure function of (seed, epoch, rank, world size) (``order.py``) and each
sample's augmentation of (seed, epoch, sample index) (``augment.py``), so a batch made twice - after
a loader death, or after a restart from ``state_dict()`` - is pixel-identical.

Failures: an unreadable or corrupt image is left out of its batch (the batch is shorter; ranks still
run the same number of steps) and recorded in ``errors``; a dead loader process is replaced and the
batches it may have held are made again; a batch whose loaders died ``max_restarts`` times raises
``LoaderError``. Memory is bounded by the ring: ``prefetch`` slots of ``batch_size`` images.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sys
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import GristmillError, SpecError
from ..spec import Preprocess
from .augment import Augment, TrainFill
from .labels import list_labeled
from .messages import BatchTask, Filled
from .order import Uneven, batch_spans, epoch_order, rank_indices, task_seed
from .pool import LoaderPool
from .ring import RingSpec

log = logging.getLogger(__name__)

IMAGENET = Preprocess(resize=256, crop=(224, 224), mean=(123.675, 116.28, 103.53),
                      std=(58.395, 57.12, 57.375), channel_order="RGB", layout="NCHW")
STATE_VERSION = 1
_POLL = 0.5


class LoaderError(GristmillError):
    """The loader cannot go on (loaders keep dying on a batch, or stalled)."""


@dataclass(frozen=True)
class Batch:
    """One batch: ``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``indices`` (N,) the
    samples' dataset indices. Unpacks like a DataLoader pair: ``images, labels = batch``."""

    images: Any
    labels: Any
    indices: np.ndarray

    def __iter__(self) -> Iterator[Any]:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return len(self.indices)


def _dist_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else those of an initialised torch.distributed, else (0, 1)."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if (rank is None or world_size is None) and dist is not None and dist.is_available() \
            and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    return (0 if rank is None else rank), (1 if world_size is None else world_size)


class Loader:
    """Batches of decoded, augmented images with labels, made ahead by loader processes.

    ``sources``: folders (ImageFolder classes), ``path label`` list files or globs (see
    ``labels.py``). ``preprocess`` sets normalisation and layout (default: ImageNet mean/std, NCHW)
    and, when ``augment`` is None, the deterministic resize + centre crop. ``augment`` (an
    ``Augment``) makes a random resized crop + flip per sample. ``shuffle``/``seed``/``set_epoch``
    decide the order; ``rank``/``world_size`` (default: torch.distributed's) give this rank its
    equal, disjoint share (``uneven``: "pad" by wrapping or "drop"; see ``order.py``). ``workers``
    processes fill ``prefetch`` slots (0: two per worker), started by ``start_method`` (default
    "fork" on Linux, see ``pool.py``). ``output``: "torch" or "numpy".
    Every batch is a copy the caller owns; with ``pin_memory`` (and CUDA) into pinned memory.

    Example::

        with gristmill.Loader("train/", batch_size=64, augment=gristmill.Augment(size=(224, 224)),
                              shuffle=True, seed=0, workers=8) as loader:
            for epoch in range(start_epoch, epochs):
                loader.set_epoch(epoch)
                for images, labels in loader:
                    ...
    """

    def __init__(self, sources: str | Sequence[str], *, batch_size: int = 32,
                 preprocess: Preprocess | None = None, augment: Augment | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, workers: int = 2,
                 prefetch: int = 0, pin_memory: bool = False,
                 output: Literal["torch", "numpy"] = "torch", rank: int | None = None,
                 world_size: int | None = None, uneven: Uneven = "pad",
                 max_image_pixels: int = 178_956_970, max_restarts: int = 3,
                 timeout: float = 300.0,
                 start_method: Literal["fork", "spawn"] | None = None) -> None:
        pre = (preprocess or Preprocess()).over(IMAGENET).complete()
        if batch_size < 1 or workers < 1 or prefetch < 0:
            raise SpecError("batch_size and workers must be >= 1 and prefetch >= 0, got "
                            f"{batch_size}, {workers}, {prefetch}")
        if output not in ("torch", "numpy") or uneven not in ("pad", "drop"):
            raise SpecError(f"output must be 'torch' or 'numpy' and uneven 'pad' or 'drop', "
                            f"got {output!r}, {uneven!r}")
        self.rank, self.world_size = _dist_rank(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise SpecError(f"rank must be in [0, world_size), got {self.rank}/{self.world_size}")
        self.inputs = list_labeled(sources)
        self.classes = self.inputs.classes
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.uneven, self.output = drop_last, uneven, output
        self.workers, self.slots = workers, prefetch or 2 * workers
        self.max_restarts, self.timeout = max_restarts, timeout
        self.start_method = start_method
        self.pin_memory = pin_memory and self._cuda_available()
        if augment is not None and augment.size is not None:
            pre = dataclasses.replace(pre, resize=augment.size, crop=augment.size)
        self.preprocess, self.augment, self.max_image_pixels = pre, augment, max_image_pixels
        self.epoch = 0
        self.restarts = 0
        self.skipped = 0
        self._errors: dict[str, tuple[str, str]] = {}
        self._position = 0
        self._generation = 0
        self._pool: LoaderPool | None = None
        self._finalizer: Any = None

    # -- order ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration (a new epoch starts at its first
        batch; the epoch already current - e.g. just restored - keeps its position)."""
        if epoch != self.epoch:
            self.epoch, self._position = epoch, 0

    def _plan(self, epoch: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        order = epoch_order(len(self.inputs), seed=self.seed, epoch=epoch, shuffle=self.shuffle)
        mine = rank_indices(order, rank=self.rank, world_size=self.world_size,
                            uneven=self.uneven)
        return mine, batch_spans(len(mine), self.batch_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return len(self._plan(self.epoch)[1])

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this epoch stands; any rank's state restores every rank (positions are equal)."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "position": self._position,
                **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the rest of its epoch."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} is not "
                             f"{STATE_VERSION}")
        changed = {k: (v, state.get(k)) for k, v in self._identity().items() if state.get(k) != v}
        if changed:
            raise ValueError("cannot resume: the order would differ; changed (now, saved): "
                             f"{changed}. Make the Loader with the saved settings.")
        self.epoch, self._position = int(state["epoch"]), int(state["position"])

    def _identity(self) -> dict[str, Any]:
        return {"samples": len(self.inputs), "seed": self.seed, "shuffle": self.shuffle,
                "batch_size": self.batch_size, "world_size": self.world_size,
                "drop_last": self.drop_last, "uneven": self.uneven}

    # -- failures ------------------------------------------------------------------------------
    @property
    def errors(self) -> list[tuple[str, str, str]]:
        """(name, stage, message) of each input that failed, once per input."""
        return [(name, stage, msg) for name, (stage, msg) in self._errors.items()]

    @property
    def pids(self) -> list[int]:
        """Process ids of the loader processes (empty before the first iteration)."""
        return self._pool.pids if self._pool is not None else []

    # -- lifecycle -----------------------------------------------------------------------------
    def _start(self) -> LoaderPool:
        if self._pool is None:
            shape = self.preprocess.item_shape()
            fill = TrainFill(self.preprocess, self.augment, self.max_image_pixels)
            ring = RingSpec.new(self.slots, self.batch_size, shape, dtype="uint8")
            self._pool = LoaderPool(ring, fill, self.workers, start_method=self.start_method,
                                    cleaner=True)  # a killed training process leaves no ring
            # the pool, not self, is what the finalizer holds: GC of the Loader frees it all
            self._finalizer = weakref.finalize(self, self._pool.close)
            self._pool.start()
        return self._pool

    def close(self) -> None:
        """Stop the loader processes and free the shared memory (also on GC and at exit)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """This rank's batches of the current epoch, from the current position, in order.

        One iteration at a time: a new ``iter(loader)`` abandons the previous one (whose next
        step raises RuntimeError) and continues from the position it reached."""
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Batch]:
        pool = self._start()
        mine, spans = self._plan(self.epoch)
        if self._position >= len(spans):
            self._position = 0  # iterating a finished epoch again repeats it, as a DataLoader
        self._generation += 1
        run = _Run(self._generation, task_seed(self.seed, self.epoch), mine, spans)
        run.incarnation = pool.incarnation
        issued = self._position
        try:
            for b in range(self._position, len(spans)):
                while issued < min(len(spans), b + self.slots):  # a task per slot, no more
                    run.issue(pool, issued, self.inputs)
                    issued += 1
                filled = self._wait(pool, run, b)
                batch = self._deliver(pool, run, b, filled)
                self._position = b + 1
                yield batch
        finally:  # done or abandoned: buffered slots go back; late ones are freed as stale
            if self._pool is pool and pool.free is not None \
                    and pool.incarnation == run.incarnation:  # else a restart took them back
                for f in run.buffered.values():
                    pool.free.put(f.slot)

    def _wait(self, pool: LoaderPool, run: _Run, b: int) -> Filled:
        if run.generation != self._generation:
            raise RuntimeError("a newer iter(loader) has taken over: iterate one at a time")
        deadline = time.monotonic() + self.timeout
        while b not in run.buffered:
            if pool.dead():
                self._restart(pool, run, b)
                deadline = time.monotonic() + self.timeout
            try:
                filled: Filled = pool.ready.get(timeout=_POLL)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise LoaderError(f"no batch for {self.timeout:.0f} s with loaders alive; "
                                      "raise timeout= for very slow storage") from None
                continue
            gen, k = filled.key
            if gen != run.generation or k < b or k in run.buffered:
                pool.free.put(filled.slot)  # from an abandoned iteration, or a duplicate
            else:
                run.buffered[k] = filled
        return run.buffered.pop(b)

    def _restart(self, pool: LoaderPool, run: _Run, b: int) -> None:
        dead = pool.dead()[0]
        self.restarts += 1
        lost = sorted(k for k in run.tasks if k >= b and k not in run.buffered)
        for k in lost:
            run.attempts[k] = run.attempts.get(k, 0) + 1
            if run.attempts[k] > self.max_restarts:
                names = [self.inputs.name(i) for i in run.tasks[k].indices]
                raise LoaderError(f"loader processes died {run.attempts[k]} times making one "
                                  f"batch (last exit code {dead.exitcode}); inputs: {names}")
        log.warning("loader process %s died (exit %s); restarting loaders, remaking %d batches",
                    dead.pid, dead.exitcode, len(lost))
        pool.restart(held=[f.slot for f in run.buffered.values()])
        run.incarnation = pool.incarnation
        for k in lost:
            pool.tasks.put(run.tasks[k])

    def _deliver(self, pool: LoaderPool, run: _Run, b: int, filled: Filled) -> Batch:
        task = run.tasks.pop(b)
        assert pool.ring is not None
        indices = np.asarray(task.indices, np.int64)[list(filled.ok)]
        for row, stage, message in filled.errors:
            self._errors[self.inputs.name(task.indices[row])] = (stage, message)
        self.skipped += len(filled.errors)
        view = pool.ring.view(filled.slot)[:len(filled.ok)]
        try:
            images = self._copy(view)
        finally:
            pool.free.put(filled.slot)  # the copy is the caller's: the slot can be refilled now
        labels = self.inputs.labels[indices]
        if self.output == "torch":
            import torch

            labels = torch.from_numpy(labels)
            if self.pin_memory:
                labels = labels.pin_memory()
        return Batch(images, labels, indices)

    def _copy(self, view: np.ndarray) -> Any:
        """The batch as the caller's float32 copy: ``(pixel - mean) / std``, one pass each."""
        pre = self.preprocess
        shape = (1, 3, 1, 1) if pre.layout == "NCHW" else (1, 1, 1, 3)
        mean = np.asarray(pre.mean, np.float32).reshape(shape)
        scale = (1.0 / np.asarray(pre.std, np.float32)).reshape(shape)
        if self.pin_memory:
            import torch

            tensor = torch.empty(view.shape, dtype=torch.float32, pin_memory=True)
            out = tensor.numpy()
        else:
            # numpy's allocation, not torch.empty: measured, 19 MB batches from torch.empty
            # grew the trainer's heap by ~200 MB over a few batches; numpy's stayed flat
            out = np.empty(view.shape, np.float32)
        np.subtract(view, mean, out=out, dtype=np.float32)  # casts in small buffered chunks
        np.multiply(out, scale, out=out)
        if self.output == "numpy":
            return out
        import torch

        return tensor if self.pin_memory else torch.from_numpy(out)

    def _cuda_available(self) -> bool:
        torch = sys.modules.get("torch")
        if torch is None:
            import torch
        if torch.cuda.is_available():
            return True
        warnings.warn("pin_memory=True but CUDA is not available: batches are not pinned",
                      stacklevel=3)
        return False


class _Run:
    """One pass over (part of) an epoch: its tasks, buffered batches and remake counts."""

    def __init__(self, generation: int, seed: int, mine: np.ndarray,
                 spans: list[tuple[int, int]]) -> None:
        self.generation, self.seed, self.mine, self.spans = generation, seed, mine, spans
        self.tasks: dict[int, BatchTask] = {}
        self.buffered: dict[int, Filled] = {}
        self.attempts: dict[int, int] = {}
        self.incarnation = 0

    def issue(self, pool: LoaderPool, b: int, inputs: Any) -> None:
        start, stop = self.spans[b]
        indices = self.mine[start:stop].tolist()
        task = BatchTask((self.generation, b), tuple(inputs.path(i) for i in indices),
                         seed=self.seed, indices=tuple(indices))
        self.tasks[b] = task
        pool.tasks.put(task)
