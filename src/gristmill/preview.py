"""``gristmill plan``: what a run would do, decided exactly as ``prepare`` would, writing nothing.

It resolves the model and devices, lists the inputs (or reads the frozen list of the job OUT
holds), plans the shards, reads the markers, runs the same calibration and budget choice as a run,
and estimates the duration: each worker runs at the lower of what its loaders can decode and what
its model threads can compute (and all of them at most at the machine's combined bound), after a
start-up as long as the calibration's first model batch plus a loader process start.
"""

from __future__ import annotations

import time
from typing import Any

from . import ledger, models
from .engines.base import calibrates
from .job import (
    ONE_BATCH_RATES,
    cpu_count,
    job_identity,
    job_state,
    needs_calibration,
    one_batch,
    one_batch_size,
    plan_workers,
    resolve,
)
from .models import multi
from .sources import display_name, list_inputs
from .spec import JobSpec
from .store import Store
from .tuning import calibrate, combined_bound, time_model

START_SECONDS = 0.5  # a worker forked from the warm fork server, its loaders spawned beside it
MAX_TIMED_BATCH = 32  # the estimate times one batch of the job's size, up to this many images
SAMPLE = 5  # input names shown


# ``gristmill plan --json``: a stable interface (README); keys are added, never removed
KEYS = ("out", "sources", "frozen_list", "resumed", "items", "shards", "shard_size",
        "committed_shards", "pending_shards", "pending_items", "sample", "model", "engine",
        "batch_size", "workers", "decode_rate_per_core", "model_rate_per_core",
        "calibration_seconds", "prepare_seconds", "bottleneck", "items_per_second",
        "estimated_seconds", "items_estimated", "containers", "bytes")
ESTIMATE_KEYS = ("decode_capacity", "model_capacity", "startup_seconds")  # when estimated


def preview(spec: JobSpec) -> dict[str, Any]:
    """The plan of ``spec`` as plain data (see ``describe`` for the words)."""
    begun = time.perf_counter()
    cache = models.ModelCache(memo=models.open_memo())
    batch_chosen = not spec.batch_size
    spec, devices = resolve(spec, cache)
    workers = plan_workers(spec, devices, spec.batch_size)
    resumed = ledger.check_out(spec.out, job_identity(spec), spec.overwrite)  # changes nothing
    frozen = resumed and Store(spec.out).exists(ledger.INPUTS_FILE)
    listed = list_inputs(spec.sources, spec.source_options()) if spec.append or not frozen else None
    # exactly the job a run would prepare (a resume, --append, --retry-errors), written nowhere
    state = job_state(spec, frozen, listed, None, save=False)
    inputs, shards, pending = state.inputs, state.shards, state.pending
    rates: tuple[float | None, float | None] = (None, None)
    started = time.perf_counter()
    if calibrates(spec) and devices[0] == "cpu" and pending and spec.modality == "image":
        rates = (multi.calibrate if spec.models else calibrate)(spec, inputs, cpu_count(),
                                                                 cache=cache)
        if needs_calibration(spec, devices):  # as the run decides (the estimate needs the rates)
            single = one_batch(spec, state.items_pending)
            workers = plan_workers(spec, devices,
                                   one_batch_size(state.items_pending, spec.batch_size,
                                                  batch_chosen) if single else spec.batch_size,
                                   rates=ONE_BATCH_RATES if single else rates)
    calibration = time.perf_counter() - started
    preparing = time.perf_counter() - begun  # what a run does before its workers start
    timing = None
    if rates[1]:  # the budget's rates are per core at batch 2; a worker runs its own batch
        timed = multi.time_model if spec.models else time_model
        timing = timed(spec, workers[0].threads, min(spec.batch_size, MAX_TIMED_BATCH), cache)
    cache.clear()
    estimate = _estimate(workers, rates, sum(len(s) for s in pending), timing,
                         min(spec.batch_size, MAX_TIMED_BATCH))
    box = state.containers()
    return {
        "out": spec.out, "sources": list(spec.sources), "frozen_list": frozen,
        "resumed": resumed, "items": state.items, "shards": len(shards),
        "shard_size": spec.shard_size, "committed_shards": len(state.done),
        "pending_shards": len(pending), "pending_items": sum(len(s) for s in pending),
        "sample": [display_name(inputs.raw(i)) for i in range(min(SAMPLE, len(inputs)))],
        "model": spec.model_label, "engine": spec.engine, "batch_size": spec.batch_size,
        "workers": [{"device": w.device, "threads": w.threads, "loaders": w.loaders,
                     "turns": w.turns} for w in workers],
        "decode_rate_per_core": rates[0], "model_rate_per_core": rates[1],
        "calibration_seconds": round(calibration, 2), "prepare_seconds": round(preparing, 1),
        "items_estimated": state.estimated, "containers": box.total if box else None,
        "bytes": box.bytes_total if box else None, **estimate}


def _estimate(workers: list[Any], rates: tuple[float | None, float | None], items: int,
              timing: tuple[float, float] | None, batch: int) -> dict[str, Any]:
    decode = rates[0]
    if not items:
        return {"bottleneck": None, "items_per_second": None, "estimated_seconds": 0.0}
    if not decode or timing is None:
        return {"bottleneck": None, "items_per_second": None, "estimated_seconds": None}
    threads = workers[0].threads
    model = batch / timing[1] / threads  # per core, at the job's batch size
    decode_cap = sum(w.loaders * decode for w in workers)
    concurrent = min(len(workers), workers[0].turns or len(workers))  # turns: that many at once
    model_cap = concurrent * threads * model
    rate = min(decode_cap, model_cap, combined_bound(cpu_count(), decode, model))
    # a worker's start: its process and loaders, then its model's slow first batch
    startup = START_SECONDS + max(0.0, timing[0] - timing[1])
    return {"bottleneck": "decode" if decode_cap < model_cap else "model",
            "decode_capacity": round(decode_cap, 2), "model_capacity": round(model_cap, 2),
            "items_per_second": round(rate, 2), "startup_seconds": round(startup, 2),
            "estimated_seconds": round(startup + items / rate, 1)}


def describe(p: dict[str, Any]) -> str:
    """The plan in a few lines for a terminal."""
    more = (p["containers"] or p["items"]) - len(p["sample"])
    about = "about " if p.get("items_estimated") else ""
    within = (f" in {p['containers']} containers" + (f" of {p['bytes'] / 1e6:.1f} MB"
                                                     if p["bytes"] else "")
              if p.get("containers") else "")
    lines = [
        f"gristmill plan: {about}{p['items']} items{within} in {p['shards']} shards of "
        f"{p['shard_size']}; {p['committed_shards']} committed, {p['pending_shards']} to run "
        f"({about}{p['pending_items']} items)",
        f"  inputs: {'the frozen list in OUT' if p['frozen_list'] else ', '.join(p['sources'])}"
        f": {', '.join(p['sample'])}" + (f" ... and {more} more" if more > 0 else ""),
    ]
    if about:
        lines.append("  items are estimated from the sizes of the tars and the samples of the "
                     "first: only the workers read the tars")
    if p["decode_rate_per_core"] and p["model_rate_per_core"]:
        lines.append(f"  calibration: decode {p['decode_rate_per_core']:.1f} img/s per core, "
                     f"model {p['model_rate_per_core']:.1f} img/s per core "
                     f"({p['calibration_seconds']:.1f} s)")
    w = p["workers"]
    lines.append(f"  budget: {len(w)} worker(s) on {w[0]['device']}, each {w[0]['threads']} "
                 f"model threads + {w[0]['loaders']} loaders, batch {p['batch_size']}"
                 + (f", {w[0]['turns']} computing at once" if w[0]["turns"] else ""))
    if p["bottleneck"]:
        lines.append(f"  bottleneck: {p['bottleneck']} (loaders can decode "
                     f"{p['decode_capacity']:.1f} img/s, the model compute "
                     f"{p['model_capacity']:.1f} img/s)")
    if p["estimated_seconds"] is not None:
        rate = f" at {p['items_per_second']:.1f} items/s" if p["items_per_second"] else ""
        lines.append(f"  estimate: {_duration(p['estimated_seconds'])}{rate}"
                     + (f", {p['startup_seconds']:.1f} s of it starting workers"
                        if p.get("startup_seconds") else ""))
        lines.append(f"  before the workers start: about {p['prepare_seconds']:.0f} s of "
                     "preparation (listing, calibration), as long as this plan took")
    else:
        lines.append("  estimate: none (the model's speed is only measured for local CPU image "
                     "jobs)")
    where = f"{p['out']} ({'resume' if p['resumed'] else 'new job'})" if p["out"] else "no -o"
    lines.append(f"  output: {where}; nothing was written")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"about {seconds:.0f} s"
    if seconds < 7200:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
