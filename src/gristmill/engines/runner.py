"""ShardRunner: the per-worker code, engine-agnostic (local processes and Ray actors run it).

Contract: ``setup()`` loads the model once and starts this worker's loader processes and slot ring;
``submit(task)`` queues a shard's batches for the loaders (non-blocking, so the next shard's first
batches decode while the current one finishes); ``step(timeout)`` runs the model on whatever slots
are ready and returns the messages for the driver (a ``Receipt`` per shard committed, a
``ShardFailed`` per shard given up, a ``Progress`` per batch); ``teardown()`` stops everything and
frees the ring.

Failures: a bad input is an error row; a loader process that dies is replaced, the queues are
rebuilt (a process killed inside a queue operation can leave its lock held), every slot is
reclaimed and every batch not yet received is issued again: the batches already received are kept
and duplicates are dropped, so the shard's content is the same as without the death. A shard
during which loaders died ``max_attempts`` times, or whose model call raised, is reported failed.
"""

from __future__ import annotations

import logging
import queue
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ledger, sinks
from ..loader.messages import BatchTask, Filled
from ..loader.pool import LoaderPool
from ..loader.process import ImageFill
from ..loader.ring import RingSpec, new_name
from ..marker import Marker, marker_name
from ..plan import batches
from ..prepared import WorkerPlan
from ..sources import InputList, display_name
from ..spec import JobSpec
from ..store import Store
from ..tuning import release_memory
from .messages import Progress, Receipt, ShardFailed, ShardTask
from .turns import Turns

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    task: ShardTask
    spans: list[tuple[int, int]]
    received: dict[int, tuple[tuple[int, ...], dict[str, np.ndarray], tuple, dict]] = field(
        default_factory=dict)
    loader_deaths: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {
        "load": 0.0, "model": 0.0, "write": 0.0})
    started: float = field(default_factory=time.time)  # wall clock: the report's timeline


class ShardRunner:
    """Runs shards through one model with its own loader processes (see module docstring)."""

    def __init__(self, spec: JobSpec, inputs: InputList, plan: WorkerPlan) -> None:
        self.spec, self.inputs, self.plan = spec, inputs, plan
        self.model: Any = None
        self.pool: LoaderPool | None = None
        self.inflight: dict[int, _InFlight] = {}
        self.loader_restarts = 0
        self.names = False  # the model's predict takes the batch's input names (capabilities)
        self.turns = Turns(plan.turns_dir, plan.turns) if plan.turns and plan.turns_dir else None
        self.sink = sinks.get(spec.format)
        self.composite = bool(spec.models) or spec.modality == "image+text"
        self.store = Store(spec.out)

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        from ..models import capabilities, create
        from ..tuning import tune_allocator

        if self.composite:  # several models or both towers, one decode (models/multi.py)
            from ..models.multi import composite

            self.model = composite(self.spec, device=self.plan.device, threads=self.plan.threads,
                                   shared_weights=self.plan.shared_weights)
            caps = self.model.capabilities
        else:
            # the loaders first: their interpreters start (0.1 s: Python, numpy, Pillow) while
            # the model is built; a composite model's fill needs the model, so there they follow it
            self._start_loaders()
            caps = capabilities(self.spec.model)
            self.model = create(self.spec.model, outputs=self.spec.outputs,
                                device=self.plan.device, threads=self.plan.threads,
                                precision=self.spec.precision,
                                shared_weights=self.plan.shared_weights,
                                preprocess=self.spec.preprocess, modality=self.spec.modality)
        self.names = caps.names
        self.model.setup()
        tune_allocator()  # after the model is built, so its start-up garbage went back to the OS
        if self.pool is None:
            self._start_loaders()
        if caps.pinned_input:
            ring = self.pool.ring
            self.model.pin_host(ring.view(0).ctypes.data, ring.spec.slots * ring.spec.slot_bytes)

    def _start_loaders(self) -> None:
        fill, item_shape, dtype = self._fill()
        ring = RingSpec(self.plan.ring_name or new_name(), self.plan.slots,
                        self.plan.batch_size, item_shape, dtype)
        # spawn, not fork: this process runs the model's thread pools, which a fork would copy
        # in an undefined state; loaders import only numpy and Pillow (text: tokenizers).
        # A ring the engine did not name (Ray) has no driver to unlink it if this process is
        # killed: the pool's own cleaner does
        self.pool = LoaderPool(ring, fill,
                               self.plan.loaders, start_method="spawn",
                               name=f"gristmill-loader-{self.plan.index}",
                               cleaner=not self.plan.ring_name)
        self.pool.start()

    def _fill(self) -> tuple[Any, tuple[int, ...], str]:
        """What the loaders fill slots with: (fill, item shape, dtype) for the job's modality."""
        if self.composite:
            return self.model.fill(self.inputs.reader_options)
        if self.spec.modality == "text":
            from ..loader.text import TextFill
            from ..models import text_encoding

            encoding = text_encoding(self.spec.model)
            return (TextFill(encoding, self.inputs.reader_options), encoding.item_shape,
                    "int64")
        return (ImageFill(self.spec.preprocess, self.spec.max_image_pixels,
                          self.inputs.reader_options), self.spec.preprocess.item_shape(),
                "float32")

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        if self.model is not None:  # before the ring: the model may have page-locked it
            self.model.teardown()
            self.model = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- work ----------------------------------------------------------------------------------
    def submit(self, task: ShardTask) -> None:
        spans = batches(task.shard, self.plan.batch_size)
        self.inflight[task.shard.id] = _InFlight(task, spans)
        for i in range(len(spans)):
            self._issue(task.shard.id, i)

    def _issue(self, shard_id: int, index: int) -> None:
        start, stop = self.inflight[shard_id].spans[index]
        self.pool.tasks.put(BatchTask((shard_id, index), (), refs=self.inputs.refs(start, stop)))

    def step(self, timeout: float) -> list[Any]:
        """Run at most one ready batch; return the messages for the driver."""
        out: list[Any] = self._check_loaders()
        try:
            filled: Filled = self.pool.ready.get(timeout=timeout)
        except queue.Empty:
            return out
        shard_id, index = filled.key
        entry = self.inflight.get(shard_id)
        if entry is None or index in entry.received:
            self.pool.free.put(filled.slot)  # a batch re-made after a loader death, already had
            return out
        try:
            start = time.perf_counter()
            result = self._predict(self.pool.ring.view(filled.slot)[:len(filled.ok)],
                                   self._names(entry, index, filled.ok)) if filled.ok else {}
            entry.seconds["model"] += time.perf_counter() - start
            if self.composite:  # each model's share, for the report
                for name, spent in self.model.take_seconds().items():
                    key = f"model:{name}"
                    entry.seconds[key] = entry.seconds.get(key, 0.0) + spent
        except Exception as exc:
            self.pool.free.put(filled.slot)
            self.inflight.pop(shard_id)
            log.debug("model failed on shard %d", shard_id, exc_info=True)
            return [*out, ShardFailed(shard_id, f"model: {type(exc).__name__}: {exc}")]
        self.pool.free.put(filled.slot)
        entry.seconds["load"] += filled.seconds
        entry.received[index] = (filled.ok, result, filled.errors, filled.columns)
        out.append(Progress(len(filled.ok) + len(filled.errors)))
        if len(entry.received) == len(entry.spans):
            out.append(self._finish(self.inflight.pop(shard_id)))
        return out

    def _names(self, entry: _InFlight, index: int, ok: tuple[int, ...]) -> list[str] | None:
        """The names of a batch's rows, for a model that takes them (else None)."""
        if not self.names:
            return None
        raw = self.inputs.raw_range(*entry.spans[index])
        return [display_name(raw[i]) for i in ok]

    def _predict(self, batch: np.ndarray, names: list[str] | None) -> dict[str, np.ndarray]:
        kwargs = {"names": names} if names is not None else {}
        if self.turns is None:
            return self.model.predict(batch, **kwargs)
        with self.turns.take():
            result = self.model.predict(batch, **kwargs)
            release_memory()  # before the next worker's turn: only those computing hold a heap
        return result

    def _finish(self, entry: _InFlight) -> Receipt | ShardFailed:
        shard = entry.task.shard
        names: list[str] = []
        errors: list[tuple[str, str, str]] = []
        error_rows: list[tuple[int, str, str, str]] = []  # with the input index, for retries
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.spec.outputs}
        columns: dict[str, list[Any]] = {c: [] for c in self.spec.keep_columns}
        for index, (start, stop) in enumerate(entry.spans):
            ok, result, errs, carried = entry.received[index]
            raw = self.inputs.raw_range(start, stop)
            names += [display_name(raw[i]) for i in ok]
            error_rows += [(start + i, display_name(raw[i]), stage, msg) for i, stage, msg in errs]
            for key in parts:
                if ok:
                    parts[key].append(result[key])
            for key, values in columns.items():
                values += carried.get(key, (None,) * len(ok))
        errors = [row[1:] for row in error_rows]
        outputs = {k: np.concatenate(v) for k, v in parts.items() if v}
        start = time.perf_counter()
        where = marker_name(shard.id)
        try:
            files = self.sink.parts(shard.name, names, outputs, errors, columns)
            where = next(iter(files), where)
            retried = (tuple(display_name(r) for r in  # their earlier error rows are superseded
                             self.inputs.raw_range(shard.start, shard.stop))
                       if shard.retry else ())
            marker = Marker(shard.id, shard.start, shard.stop, ok=len(names), errors=len(errors),
                            inputs=self.inputs.digest(shard.start, shard.stop),
                            spec=self.spec.identity_hash(), format=self.spec.format,
                            files=tuple(files), error_rows=tuple(error_rows),
                            shapes={k: v.shape[1:] for k, v in outputs.items()},
                            retried=retried)
            done = ledger.commit_parts(self.store, files, marker)
        except OSError as exc:
            return ShardFailed(shard.id, f"write {self.store.path(where)}: {exc.strerror or exc}")
        except Exception as exc:  # an object store's client errors are not all OSErrors
            return ShardFailed(shard.id, f"write {self.store.path(where)}: "
                                         f"{describe_exception(exc)}")
        entry.seconds["write"] = time.perf_counter() - start
        return Receipt(shard.id, len(names), len(errors), done, dict(entry.seconds),
                       worker=self.plan.index, started=entry.started, finished=time.time())

    def _check_loaders(self) -> list[Any]:
        dead = self.pool.dead()
        if not dead:
            return []
        self.loader_restarts += 1
        log.warning("loader process %s died (exit %s); restarting loaders",
                    dead[0].pid, dead[0].exitcode)
        self.pool.restart(held=())  # the model holds no slot between steps
        failed: list[Any] = []
        for shard_id, entry in list(self.inflight.items()):
            entry.loader_deaths += 1
            if entry.loader_deaths >= self.spec.max_attempts:
                self.inflight.pop(shard_id)
                failed.append(ShardFailed(shard_id, f"loader process died {entry.loader_deaths} "
                                                    f"times (last exit code {dead[0].exitcode})"))
                continue
            for index in range(len(entry.spans)):
                if index not in entry.received:
                    self._issue(shard_id, index)
        return failed


def describe_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
