"""Auto-tuning: how many workers, model threads and loader processes a job gets, and the allocator.

Policy (``choose_budget``) is a pure function of plain numbers, tested without processes; the
mechanism (``calibrate``: a few timed decodes and one timed model batch in the driver, and
``tune_allocator``: glibc settings for the worker process) lives beside it.

The CPU rule: per image, decoding costs ``1/decode_rate`` core-seconds and the model
``1/model_rate`` core-seconds (both rates per core). The cores are split in that proportion, so
decode and model finish together and the job runs at the combined bound
``cores / (1/decode_rate + 1/model_rate)``. Loaders that have nothing to do sleep on a queue, so a
model-bound job keeps every core for model threads and still gets one loader; a decode-bound job
keeps one model thread. Torch's intra-op scaling flattens past ~8 threads, so a CPU worker takes at
most ``MAX_THREADS`` threads and more cores mean more workers. A GPU worker needs one host thread;
the remaining cores (one kept for the driver when there are many) go to its loaders.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_THREADS = 8
SLOW_BATCH_SECONDS = 0.5  # calibration stops after the warm-up batch when it took this long
# glibc mallopt parameters: without these, every large tensor the model allocates is a fresh mmap
# that the kernel must zero-fill page by page (measured: 9.8 -> 16.2 img/s on ResNet-50, 2 cores).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30
# A thread's first allocation gives it a glibc arena of its own, made of mmapped 64 MB heaps that
# glibc unmaps as soon as they empty, whatever the settings above: a model run on such a thread (a
# Ray actor's, which has no main thread to offer) page-faults on every large tensor again (measured:
# 115k faults per batch, 40 % slower). The limit is read once per process, before its first extra
# arena, so it must be in the environment the process starts with.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1"}


@dataclass(frozen=True)
class Budget:
    """Per worker: model ``threads``, ``loaders`` processes, ring ``slots``; and ``workers``."""

    workers: int
    threads: int
    loaders: int
    slots: int


def choose_budget(cores: int, decode_rate: float | None, model_rate: float | None, *,
                  gpus: int = 0, workers: int = 0, threads: int = 0, loaders: int = 0,
                  slots: int = 0) -> Budget:
    """The budget for ``cores`` cores; non-zero ``workers``/``threads``/``loaders``/``slots`` win.

    ``decode_rate`` and ``model_rate`` are images per second per core (None: not measured, then the
    split is even). With ``gpus`` > 0 there is one worker per GPU and the model rate is ignored.
    """
    cores = max(1, cores)
    if gpus > 0:
        count = workers or gpus
        spare = cores - 1 if cores > 2 * count else cores  # one core for the driver when plentiful
        per = max(1, spare // count - 1)  # minus the worker's own host thread
        t, ld = threads or 1, loaders or per
        return Budget(count, t, ld, slots or ld + 2)
    share = _decode_share(decode_rate, model_rate)
    model_cores = max(1, round(cores * (1.0 - share)))
    count = workers or max(1, math.ceil(model_cores / MAX_THREADS))
    per_worker = max(1, cores // count)
    t = threads or max(1, min(MAX_THREADS, round(per_worker * (1.0 - share))))
    ld = loaders or max(1, round(per_worker * share))
    if not loaders and decode_rate and model_rate and decode_rate > 0 and model_rate > 0:
        # rounding can starve the loaders of a small machine: on 2 cores a decode share of 0.74
        # rounds to one loader, 35 % under the bound (two cheap models over 1080p JPEGs). One
        # loader more than the split (the model's thread yields its core while it waits for
        # batches) is taken when it is worth 10 % or more
        bound = per_worker * combined_bound(1, decode_rate, model_rate)

        def rate(n: int) -> float:
            return min(n * decode_rate, t * model_rate, bound)

        if rate(ld + 1) >= 1.1 * rate(ld):
            ld += 1
    return Budget(count, t, ld, slots or ld + 2)


def _decode_share(decode_rate: float | None, model_rate: float | None) -> float:
    """Fraction of core time decoding should get (0.5 when either rate is unknown)."""
    if not decode_rate or not model_rate or decode_rate <= 0 or model_rate <= 0:
        return 0.5
    d, m = 1.0 / decode_rate, 1.0 / model_rate
    return d / (d + m)


def combined_bound(cores: int, decode_rate: float, model_rate: float) -> float:
    """Images/s when every core decodes or runs the model and neither waits: 1/(1/d+1/m) x cores."""
    return cores / (1.0 / decode_rate + 1.0 / model_rate)


# -- mechanism -------------------------------------------------------------------------------------
def proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a /proc file; None when unknown (not Linux,
    /proc hidden, no such line)."""
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)),
                        None)
    except OSError:
        return None


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags as Linux lists them; None when unknown (no such file or line)."""
    flags = proc_field(cpuinfo, "flags")
    return None if flags is None else set(flags.split())


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); None when unknown.

    Without them PyTorch emulates bf16 and ``--precision bf16`` runs slower than fp32.
    """
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(BF16_FLAGS & flags)


def tune_allocator() -> bool:
    """Keep freed memory in the heap (no mmap per large block, no trimming); True if applied.

    Called in a worker before its first batch; affects only allocations made afterwards.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    except (OSError, AttributeError):
        return False
    return ok


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_bytes() -> int | None:
    """The size of this process's main heap (glibc's ``mallinfo2().arena``); None without glibc
    2.33+. With ``tune_allocator``'s settings it only grows, so its growth over a call is what
    that call's allocations needed at their peak."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().arena)


PAGE_BYTES = 4096
TOUCH_CHUNK_BYTES = 16 << 20
MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault a range in with one call


def touch_heap(nbytes: int, stop: Callable[[], bool]) -> int:
    """Fault in up to ``nbytes`` of heap, then free it, where ``tune_allocator`` keeps it for the
    allocations to come; ``stop()`` is asked between chunks of 16 MB. Returns the bytes touched.

    What it buys: the kernel zero-fills each page on its first touch, so whatever touches the heap
    first waits for that (a fresh worker's first batch: 0.1-0.2 s of page faults); done here, it
    costs an otherwise idle core instead. ``madvise(MADV_POPULATE_WRITE)`` faults a chunk in one
    call (3 GB/s here, against 2 GB/s touching a byte per page, the fallback on older kernels).
    Kept under the trim threshold, so ``free`` keeps it.
    """
    nbytes = min(nbytes, TRIM_THRESHOLD_BYTES // 2) // PAGE_BYTES * PAGE_BYTES
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return 0
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    block = libc.malloc(nbytes + PAGE_BYTES) if nbytes > 0 else None
    if not block:
        return 0
    start = -(-block // PAGE_BYTES) * PAGE_BYTES  # madvise takes whole pages
    populate = True
    done = 0
    try:
        while done < nbytes and not stop():
            size = min(TOUCH_CHUNK_BYTES, nbytes - done)
            if not populate or libc.madvise(start + done, size, MADV_POPULATE_WRITE) != 0:
                populate = False
                pages = (ctypes.c_uint8 * size).from_address(start + done)
                for offset in range(0, size, PAGE_BYTES):
                    pages[offset] = 0
            done += size
    finally:
        libc.free(block)
    return done


def warm_heap(run_blank: Callable[[], object], batch_size: int,
              stop: Callable[[], bool]) -> tuple[int, int]:
    """Fault in the heap a model's batch will take before the batch comes: ``run_blank()`` runs
    the model on one blank input, and its growth of the heap times ``batch_size`` is touched
    (``touch_heap``) until ``stop()``. Returns (heap bytes per input, bytes touched); (0, 0)
    without glibc's ``mallinfo2``. Needs ``tune_allocator``'s settings, which keep what it touched.

    Why: a fresh worker's first batch touches its whole activation heap first (the bundled model,
    batch 32: about 450 MB, 100,000 page faults, 0.45-0.5 s against 0.3 s warm), while its model
    idles until the loaders have filled that batch.
    """
    before = heap_bytes()
    if before is None:
        return 0, 0
    run_blank()
    grown = (heap_bytes() or before) - before
    return grown, touch_heap(grown * batch_size, stop)


def release_memory() -> None:
    """Give freed heap memory back to the OS (the driver after calibration)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_decode(refs: list[Any], preprocess: Any, max_pixels: int,
                   seconds: float = 0.5, *, options: dict[str, Any] | None = None,
                   write: Any = None, shape: tuple[int, ...] = ()) -> float | None:
    """Images/s of one core reading, decoding and preprocessing ``refs`` (None if all fail).

    ``refs`` are ``sources.ItemRef``s (or plain file paths). ``write(data, row)`` (a row of
    ``shape``) replaces the decode into ``preprocess``'s row (several models' segments).
    """
    import numpy as np

    from .errors import ItemError
    from .sources.base import ItemRef, Kind
    from .sources.reader import BatchReader
    from .transforms import decode_into

    reader = BatchReader(options or {})
    row = np.empty(shape or preprocess.item_shape(), np.float32)
    if write is None:
        def write(data: bytes, out: np.ndarray) -> None:
            decode_into(data, out, preprocess, max_pixels)

    done, spent = 0, 0.0
    for ref in refs:
        start = time.perf_counter()
        try:
            item = reader.open([ref if isinstance(ref, ItemRef) else ItemRef(Kind.FILE, ref)])[0]
            if isinstance(item, ItemError):
                continue
            write(item.data, row)
        except ItemError:
            continue
        spent += time.perf_counter() - start
        done += 1
        if spent > seconds:
            break
    return done / spent if done and spent > 0 else None


def measure_model(spec: Any, threads: int, batch: int = 2, cache: Any = None) -> float | None:
    """Images/s per core of the job's model on the CPU with ``threads`` threads (None: failed).

    A model whose backend keeps the driver's build (``driver_model``) is never built twice here.
    """
    timing = time_model(spec, threads, batch, cache)
    return None if timing is None else batch / timing[1] / threads


def time_model(spec: Any, threads: int, batch: int, cache: Any = None,
               ) -> tuple[float, float] | None:
    """(first batch seconds, best later batch seconds) of the model on the CPU (None: failed)."""
    import numpy as np

    from .models import create

    try:
        model = create(spec.model, outputs=spec.outputs, device="cpu", threads=threads,
                       precision=spec.precision, cache=cache, preprocess=spec.preprocess)
        model.setup()
        x = np.zeros((batch, *spec.preprocess.item_shape()), np.float32)
        start = time.perf_counter()
        model.predict(x)  # warm-up: first-call allocations, kernel selection, malloc thresholds
        first = elapsed = time.perf_counter() - start
        # A model this slow is far slower than any decode: the split is clear without a precise
        # figure, and a heavy model's timed runs would cost the user seconds for nothing.
        for _ in range(2 if elapsed < SLOW_BATCH_SECONDS else 0):
            start = time.perf_counter()  # best of two: a neighbour's burst is not the model
            model.predict(x)
            elapsed = min(elapsed, time.perf_counter() - start)
        model.teardown()
    except Exception:  # calibration is advice: a model that cannot run here fails in the worker
        log.debug("model calibration failed", exc_info=True)
        return None
    finally:
        release_memory()
    return first, elapsed


def calibrate(spec: Any, inputs: Any, cores: int, *, sample: int = 8,
              cache: Any = None) -> tuple[float | None, float | None]:
    """(decode rate, model rate), per core, from inputs spread over the list and one batch (a job
    of several models: ``models.multi.calibrate``)."""

    from .sources import sample_refs

    refs = sample_refs(inputs, sample)
    decode = measure_decode(refs, spec.preprocess, spec.max_image_pixels,
                            options=inputs.reader_options)
    model = measure_model(spec, threads=cores, cache=cache)
    log.info("calibration: decode %.1f img/s/core, model %.1f img/s/core",
             decode or 0.0, model or 0.0)
    return decode, model
