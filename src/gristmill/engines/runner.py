"""ShardRunner: the per-worker code, engine-agnostic (local processes and Ray actors run it).

Contract: ``setup()`` loads the model once and starts this worker's loader processes and slot ring;
``submit(task)`` queues a shard's batches for the loaders (non-blocking, so the next shard's first
batches decode while the current one finishes); ``step(timeout)`` runs the model on whatever slots
are ready and returns the messages for the driver (a ``Receipt`` per shard committed, a
``ShardFailed`` per shard given up, a ``Progress`` per batch); ``teardown()`` stops everything and
frees the ring.

A shard of units (whole tars, table row groups: ``sources.expand``) is expanded into its items
first, in a background thread (a remote tar is copied to this worker's spool, once), while the
model runs the batches of the shard before it; its items' names become known here and are
recorded at commit, with, for each error row of an item found in a unit, the reference that opens
it again (``Marker.error_refs``). A container that changed since it was listed fails the shard
``fatal``: the job stops (``SourceChanged``) rather than mix two versions of it.

Failures: a bad input is an error row; a loader process that dies is replaced, the queues are
rebuilt (a process killed inside a queue operation can leave its lock held), every slot is
reclaimed and every batch not yet received is issued again: the batches already received are kept
and duplicates are dropped, so the shard's content is the same as without the death. A shard
during which loaders died ``max_attempts`` times, or whose model call raised, is reported failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ledger, sinks
from ..errors import SourceChanged
from ..loader.messages import BatchTask, Filled
from ..loader.pool import LoaderPool
from ..loader.process import ImageFill
from ..loader.ring import RingSpec, new_name
from ..marker import Marker, marker_name
from ..prepared import WorkerPlan
from ..sources import Expanded, InputList, display_name, entry_of, expand
from ..spec import JobSpec
from ..store import Store
from ..tuning import release_memory, warm_heap
from .messages import Progress, Receipt, ShardFailed, ShardTask
from .turns import Turns

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    task: ShardTask
    spans: list[tuple[int, int]]  # batches, as positions in ``items``
    items: Expanded | None = None  # None while its units are being expanded
    expanding: Future | None = None
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
        self.spool = ""  # where remote containers are copied while their shard runs
        self.expander: ThreadPoolExecutor | None = None
        self.warm = False  # the heap is still to be warmed before the first batch (``_warm``)

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
        if self.inputs.has_units:
            self.spool = tempfile.mkdtemp(prefix="gristmill-spool-")
            self.expander = ThreadPoolExecutor(1, thread_name_prefix="gristmill-expand")
        self.model.setup()
        # after the model is built, so its start-up garbage went back to the OS
        self.warm = (tune_allocator() and self.plan.device == "cpu" and self.turns is None
                     and self.spec.modality == "image")
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
        # mid-lock (loaders import only numpy and Pillow; text: tokenizers); but a local worker
        # runs none before its model, so its first loaders fork (0.02 s, not 0.13-0.25 s).
        # A ring the engine did not name (Ray) has no driver to unlink: the pool's cleaner does
        self.pool = LoaderPool(ring, fill,
                               self.plan.loaders, start_method="spawn",
                               fork_first=self.plan.fork_loaders and self.model is None,
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
        if self.expander is not None:
            self.expander.shutdown(wait=True, cancel_futures=True)
            self.expander = None
        if self.spool:
            shutil.rmtree(self.spool, ignore_errors=True)
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
        shard = task.shard
        if self.expander is None:  # items only: their names and refs are in the frozen list
            self._start(_InFlight(task, [], expand(self.inputs, shard.start, shard.stop, "")))
            return
        self.inflight[shard.id] = _InFlight(task, [], expanding=self.expander.submit(
            expand, self.inputs, shard.start, shard.stop, self.spool))

    def _start(self, entry: _InFlight) -> None:
        n = len(entry.items.names)
        entry.spans = [(a, min(a + self.plan.batch_size, n))
                       for a in range(0, n, self.plan.batch_size)]
        self.inflight[entry.task.shard.id] = entry
        for i in range(len(entry.spans)):
            self._issue(entry.task.shard.id, i)

    def _issue(self, shard_id: int, index: int) -> None:
        entry = self.inflight[shard_id]
        a, b = entry.spans[index]
        self.pool.tasks.put(BatchTask((shard_id, index), (), refs=tuple(entry.items.refs[a:b])))

    def _expanded(self) -> list[Any]:
        """Shards whose units are expanded: their batches issued (or, for a shard without a
        readable item, finished at once); a failed expansion is a failed shard."""
        out: list[Any] = []
        for shard_id, entry in list(self.inflight.items()):
            if entry.expanding is None or not entry.expanding.done():
                continue
            try:
                entry.items, entry.expanding = entry.expanding.result(), None
            except SourceChanged as exc:
                self.inflight.pop(shard_id)
                out.append(ShardFailed(shard_id, str(exc), fatal=True))
                continue
            except Exception as exc:
                self.inflight.pop(shard_id)
                log.debug("expanding shard %d failed", shard_id, exc_info=True)
                out.append(ShardFailed(shard_id, f"listing its items: {describe_exception(exc)}"))
                continue
            self._start(entry)
            if not entry.spans:
                out.append(self._finish(self.inflight.pop(shard_id)))
        return out

    def step(self, timeout: float) -> list[Any]:
        """Run at most one ready batch; return the messages for the driver."""
        out: list[Any] = self._check_loaders()
        if self.expander is not None:
            out += self._expanded()
            if any(e.expanding is not None for e in self.inflight.values()):
                timeout = min(timeout, 0.02)  # look again soon: a shard may become ready
        if not any(e.spans for e in self.inflight.values()):
            if self.inflight and timeout:
                time.sleep(timeout)
            return out
        if self.warm:
            self.warm = False
            self._warm()
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
            self._drop(self.inflight.pop(shard_id))
            log.debug("model failed on shard %d", shard_id, exc_info=True)
            return [*out, ShardFailed(shard_id, f"model: {type(exc).__name__}: {exc}")]
        self.pool.free.put(filled.slot)
        entry.seconds["load"] += filled.seconds
        entry.received[index] = (filled.ok, result, filled.errors, filled.columns)
        out.append(Progress(len(filled.ok) + len(filled.errors)))
        if len(entry.received) == len(entry.spans):
            out.append(self._finish(self.inflight.pop(shard_id)))
        return out

    def _warm(self) -> None:
        """Once, while the loaders fill the first batch: fault in the heap a batch will take
        (``tuning.warm_heap``), from the model's run on one blank input (``describe``'s probe)."""
        ready, ring = self.pool.ready, self.pool.ring.spec
        if not ready.empty():
            return

        def blank() -> None:
            self.model.predict(np.zeros((1, *ring.item_shape), ring.dtype))
            if self.composite:  # its per-model timings are the report's: this input is not
                self.model.take_seconds()

        try:
            grown, touched = warm_heap(blank, self.plan.batch_size, lambda: not ready.empty())
        except Exception:  # the real batches will say what is wrong, in their shard's failure
            log.debug("worker %d: the blank warm-up input failed", self.plan.index, exc_info=True)
            return
        log.debug("worker %d: warmed %d MB of heap (%d MB per input)", self.plan.index,
                  touched >> 20, grown >> 20)

    def _names(self, entry: _InFlight, index: int, ok: tuple[int, ...]) -> list[str] | None:
        """The names of a batch's rows, for a model that takes them (else None)."""
        if not self.names:
            return None
        a, _ = entry.spans[index]
        return [display_name(entry.items.names[a + i]) for i in ok]

    def _drop(self, entry: _InFlight) -> None:
        """A shard is done with (committed or failed): its spooled copies go."""
        for path in entry.items.spooled if entry.items is not None else ():
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _predict(self, batch: np.ndarray, names: list[str] | None) -> dict[str, np.ndarray]:
        kwargs = {"names": names} if names is not None else {}
        if self.turns is None:
            return self.model.predict(batch, **kwargs)
        with self.turns.take():
            result = self.model.predict(batch, **kwargs)
            release_memory()  # before the next worker's turn: only those computing hold a heap
        return result

    def _finish(self, entry: _InFlight) -> Receipt | ShardFailed:
        try:
            return self._commit(entry)
        finally:
            self._drop(entry)

    def _error_row(self, items: Expanded, position: int, stage: str, message: str
                   ) -> tuple[tuple[int, str, str, str], tuple[int, int, int, int] | None]:
        """An error row (with its entry's index, or -1 for an item found in a unit) and the
        reference that opens that item again (None: the entry's index does)."""
        name = display_name(items.names[position])
        origin = items.origin[position]
        if origin >= 0:
            return (origin, name, stage, message), None
        ref = items.refs[position]
        unit = items.units[-1 - origin]
        return (-1, name, stage, message), (int(ref.kind), unit.container, ref.start, ref.size)

    def _commit(self, entry: _InFlight) -> Receipt | ShardFailed:
        shard = entry.task.shard
        items = entry.items
        names: list[str] = []
        error_rows: list[tuple[int, str, str, str]] = []  # with the input index, for retries
        error_refs: list[tuple[int, int, int, int] | None] = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.spec.outputs}
        columns: dict[str, list[Any]] = {c: [] for c in self.spec.keep_columns}
        rows = np.zeros(shard.stop - shard.start, dtype=np.int64)  # ok rows per entry (units)
        for index, (start, _) in enumerate(entry.spans):
            ok, result, errs, carried = entry.received[index]
            names += [display_name(items.names[start + i]) for i in ok]
            if items.units:
                for i in ok:
                    rows[entry_of(items, start + i) - shard.start] += 1
            for i, stage, msg in errs:
                row, ref = self._error_row(items, start + i, stage, msg)
                error_rows.append(row)
                error_refs.append(ref)
            for key in parts:
                if ok:
                    parts[key].append(result[key])
            for key, values in columns.items():
                values += carried.get(key, (None,) * len(ok))
        for position, (name, exc) in sorted(items.failed.items()):  # units not readable at all
            error_rows.append((position, display_name(name), exc.stage, exc.message))
            error_refs.append(None)
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
                            retried=retried,
                            error_refs=(tuple(error_refs) if any(error_refs) else None),
                            rows=tuple(rows.tolist()) if items.units else ())
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
            if entry.items is None:  # still expanding: nothing issued yet
                continue
            entry.loader_deaths += 1
            if entry.loader_deaths >= self.spec.max_attempts:
                self._drop(self.inflight.pop(shard_id))
                failed.append(ShardFailed(shard_id, f"loader process died {entry.loader_deaths} "
                                                    f"times (last exit code {dead[0].exitcode})"))
                continue
            for index in range(len(entry.spans)):
                if index not in entry.received:
                    self._issue(shard_id, index)
        return failed


def describe_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
