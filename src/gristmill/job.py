"""Preparing a job: everything checked and decided before any process starts.

``prepare(spec)`` validates the spec, resolves the model (preset, outputs), the devices and the
per-worker budgets, lists the sources (or reopens the job OUT holds, ``outdir.reopen``, growing its
frozen list for ``--append`` and ``--retry-errors``: see ``increment.py``), and plans the workers.
Every problem a user can cause raises ``SpecError`` with one line, so the CLI can exit 2 before a
single worker is spawned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from . import increment, ledger, models, outdir, sinks
from .errors import SpecError
from .models import multi
from .outdir import JobState
from .prepared import PreparedJob, WorkerPlan
from .sources import InputList, list_inputs, storage
from .spec import JobSpec
from .store import Store, is_remote
from .tuning import calibrate, choose_budget, cpu_has_bf16, release_memory

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"  # OUT/.cache: files the workers of this run share (weights to mmap)
# (OUT on object storage: a local temporary folder instead, removed after the run)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# what a GPU driver puts in /dev or /proc on Linux (NVIDIA's, AMD's ROCm, WSL's): without any of
# them torch finds no GPU, so ``auto`` needs no torch import (1.2-1.5 s) to say "cpu"
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def gpu_driver_present(files: tuple[str, ...] = GPU_DRIVER_FILES) -> bool:
    """Whether a GPU driver may be loaded (True where unknown: not Linux)."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in files)


def resolve_devices(device: str) -> list[str]:
    """``auto|cpu|cuda|cuda:0,1`` -> a list of torch device strings (one per GPU worker)."""
    device = device.strip().lower()
    if device == "cpu" or (device == "auto" and not gpu_driver_present()):
        return ["cpu"]
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return [f"cuda:{i}" for i in range(available)] or ["cpu"]
    if device == "cuda" or device.startswith("cuda:"):
        if not available:
            raise SpecError(f"--device {device}: no CUDA device is available on this machine")
        if device == "cuda":
            return [f"cuda:{i}" for i in range(available)]
        try:
            ids = [int(x) for x in device[5:].split(",")]
        except ValueError:
            raise SpecError(f"--device {device}: expected cuda:0,1,...") from None
        bad = [i for i in ids if not 0 <= i < available]
        if bad:
            raise SpecError(f"--device {device}: no CUDA device {bad[0]} "
                            f"({available} available)")
        return [f"cuda:{i}" for i in ids]
    raise SpecError(f"--device must be auto, cpu, cuda or cuda:0,1,..., got {device!r}")


def plan_workers(spec: JobSpec, devices: list[str], batch_size: int, *,
                 rates: tuple[float | None, float | None] = (None, None)) -> list[WorkerPlan]:
    """One worker per GPU, or CPU workers sharing the cores; budgets from ``tuning``.

    ``rates`` are the calibrated (decode, model) images/s per core; sizes the user gave win.
    """
    cores = cpu_count()
    gpus = 0
    if devices[0] != "cpu":
        if spec.workers > len(devices):
            raise SpecError(f"--workers {spec.workers} is more than the {len(devices)} "
                            f"device(s) of --device {spec.device}")
        devices = devices[:spec.workers or len(devices)]
        gpus = len(devices)
    budget = choose_budget(cores, *rates, gpus=gpus, workers=spec.workers, threads=spec.threads,
                           loaders=spec.loaders, slots=spec.slots)
    turns = 0
    if not gpus:
        devices = ["cpu"] * budget.workers
        if budget.workers * budget.threads > cores:  # more model threads than cores: take turns
            turns = max(1, cores // budget.threads)
    return [WorkerPlan(i, d, budget.threads, budget.loaders, budget.slots, batch_size,
                       turns=turns) for i, d in enumerate(devices)]


def needs_calibration(spec: JobSpec, devices: list[str]) -> bool:
    """A CPU job that left any of workers/threads/loaders to us is worth a two-second probe.
    (Image jobs: the probe decodes images; a text job takes the default budget.)

    (Only for engines whose workers run on this machine: ``Backend.calibrates``.)
    """
    return (devices[0] == "cpu" and spec.modality == "image"
            and not (spec.workers and spec.threads and spec.loaders))


# a job of one batch has nothing to overlap, so nothing to balance: its loader decodes the batch
# once while the model waits either way, and a probe would cost more than the job (0.2 s of a
# 2.5 s run of 32 photos). These rates give every core to the model and one loader.
ONE_BATCH_RATES = (math.inf, 1.0)


def one_batch(spec: JobSpec, items_pending: int) -> bool:
    """Whether what is left of the job fits one batch (then ``ONE_BATCH_RATES`` size it)."""
    return items_pending <= spec.batch_size


def one_batch_size(items_pending: int, batch_size: int, chosen: bool) -> int:
    """The workers' batch size for a job that fits one batch: two halves, where the batch size
    was left to us (``chosen``), so that the loader decodes the second half while the model runs
    the first (32 photos: the model starts 0.1 s sooner, and its first half touches half the heap).
    Rows do not depend on how inputs are batched; the spec's batch size stays as it was."""
    return max(1, -(-items_pending // 2)) if chosen else batch_size


def resolve(spec: JobSpec, cache: models.ModelCache | None = None, *,
            devices: list[str] | None = None) -> tuple[JobSpec, list[str]]:
    """The spec with the model's preset, outputs and batch size filled in; and the devices.

    ``cache`` keeps the module a PyTorch model was built into for ``prepare``'s later steps;
    ``devices`` are the engine's when it decided them (Ray: from the cluster), else this
    machine's for ``spec.device``.
    """
    spec.check()
    if spec.models or spec.modality == "image+text":  # several models, or both towers
        spec = multi.resolve(spec, cache)
        devices = devices or resolve_devices(spec.device)
        batch = spec.batch_size or (32 if devices[0] == "cpu" else 128)
        return dataclasses.replace(spec, batch_size=batch, out=spec.out if is_remote(spec.out)
                                   else os.path.abspath(spec.out)), devices
    info = models.describe(spec.model, cache, spec.modality)
    outputs = models.check_outputs(spec.outputs, info, spec.model.ref)
    # text is tokenized by the model's tokenizer: image preprocessing stays unset
    preprocess = (spec.preprocess.over(info.preset).complete() if spec.modality == "image"
                  else spec.preprocess)
    devices = devices or resolve_devices(spec.device)
    caps = models.capabilities(spec.model, cache)
    precisions = caps.precisions
    if spec.model.normalize and not caps.normalize:
        raise SpecError(f"--normalize: model {spec.model.ref} has no embedding outputs to "
                        "normalise (drop --normalize)")
    if spec.precision not in precisions:
        raise SpecError(f"--precision {spec.precision}: model {spec.model.ref} runs only "
                        f"{', '.join(sorted(precisions))} (drop --precision)")
    if spec.precision == "bf16" and devices[0] == "cpu" and cpu_has_bf16() is False:
        log.warning("--precision bf16: this CPU has neither AVX-512 BF16 nor AMX, so bf16 is "
                    "emulated and slower than fp32")
    batch = spec.batch_size or (32 if devices[0] == "cpu" else 128)
    model = spec.model
    for name in ("weights", "mean_file"):
        value = getattr(model, name)
        if value:
            model = dataclasses.replace(model, **{name: os.path.abspath(value)})
    if models.kind_of(model.ref) != "builtin" and os.path.exists(model.ref):
        model = dataclasses.replace(model, ref=os.path.abspath(model.ref))
    resolved = dataclasses.replace(spec, outputs=outputs, preprocess=preprocess,
                                   batch_size=batch, model=model,
                                   out=spec.out if is_remote(spec.out)
                                   else os.path.abspath(spec.out))
    return resolved, devices


def job_identity(spec: JobSpec) -> dict[str, Any]:
    """What ``job.json`` must hold for OUT to be this job's (a resume) and not another's."""
    return spec.identity() | {"sources": [storage.redact(s) if storage.is_url(s) else
                                          os.path.abspath(s) for s in spec.sources]}


def prepare(spec: JobSpec, settle: Callable[[], None] | None = None, *,
            devices: list[str] | None = None, calibrates: bool = True) -> PreparedJob:
    """Validate and resolve ``spec``; create or reopen OUT; plan shards; read the ledger.

    ``settle`` is called before the calibration timings (the engine's own start-up, running
    beside this, waits there so that it does not skew them). ``devices`` and ``calibrates`` come
    from the engine's ``Backend``: the devices it decided, and whether its workers run on this
    machine (so that this machine's measured rates size them).
    """
    # describe, shared weights and calibration build the model once, or read what a run kept
    cache = models.ModelCache(memo=models.open_memo())
    batch_chosen = not spec.batch_size
    spec, devices = resolve(spec, cache, devices=devices)
    workers = plan_workers(spec, devices, spec.batch_size)  # bad sizes fail before OUT is touched
    identity = job_identity(spec)
    job_json = json.dumps({"identity": identity, "spec": json.loads(spec.to_json())},
                          indent=2, sort_keys=True)
    store = Store(spec.out)
    folders = sinks.get(spec.format).folders(spec.outputs)
    resumed = ledger.check_out(spec.out, identity, spec.overwrite)
    frozen = resumed and store.exists(ledger.INPUTS_FILE)
    listed = list_inputs(spec.sources, spec.source_options()) if spec.append or not frozen else None
    ledger.init_out(spec.out, job_json, overwrite=spec.overwrite, folders=folders)
    cache_dir = (tempfile.mkdtemp(prefix="gristmill-cache-") if store.remote
                 else os.path.join(spec.out, CACHE_DIR))
    state = job_state(spec, frozen, listed, cache_dir, save=True)
    ledger.remove_stale_temps(spec.out, folders)
    shared = None
    if state.pending and devices[0] == "cpu":
        shared = (multi.share_all(spec, cache_dir, cache) if spec.models
                  else models.share_weights(spec.model, cache_dir, cache, spec.outputs))
    if state.pending and calibrates and needs_calibration(spec, devices):
        batch = spec.batch_size
        if one_batch(spec, state.items_pending):
            rates = ONE_BATCH_RATES
            batch = one_batch_size(state.items_pending, batch, batch_chosen)
        else:
            if settle is not None:
                settle()
            rates = (multi.calibrate if spec.models else calibrate)(spec, state.inputs,
                                                                     cpu_count(), cache=cache)
        workers = plan_workers(spec, devices, batch, rates=rates)
    cache.clear()  # the driver is done with its model
    workers = [dataclasses.replace(w, shared_weights=shared) for w in workers]
    release_memory()  # the driver's model copies are garbage now; hand the pages back
    return PreparedJob(state, workers, resumed, cache_dir)


def job_state(spec: JobSpec, frozen: bool, listed: InputList | None, local_dir: str | None, *,
              save: bool) -> JobState:
    """The job as it will run: a new one over the fresh ``listed`` inputs, or the job OUT holds
    (its frozen list is never listed again) grown by ``--append`` / ``--retry-errors``. With
    ``save`` the list is frozen in OUT (``outdir.save``); without, nothing is written (``plan``)."""
    if not frozen:
        assert listed is not None
        state = outdir.build(spec.out, spec, listed, read_markers=not spec.overwrite)
        return outdir.save(state, local_dir or "", grown=False) if save else state
    state = outdir.reopen(spec.out, spec, local_dir=local_dir)
    state, grown = increment.grow(state, listed)
    if grown and save:
        state = outdir.save(state, local_dir or "", grown=True)
    return state
