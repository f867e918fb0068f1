"""One benchmark case per child process: ``python -m benchmarks.cases CASE JSON-ARGS``.

Each case prints one JSON line ``{"images": n, "seconds": s, ...}`` on stdout. Timings run from
the start of the work to its end inside the child: model loading and process start-up are included
for every contender alike (the interpreter's own start is not). The alternatives are written the
way their users write them: PIL decode and resize, numpy normalisation, torch in the main process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from multiprocessing import get_context
from typing import Any

import numpy as np

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
_MODEL: Any = None


def cores() -> int:
    return len(os.sched_getaffinity(0))


def build(ref: str) -> Any:
    """The torch module for a gristmill model reference, eval mode, CPU."""
    from gristmill.models.torch import build_module
    from gristmill.spec import ModelSpec

    return build_module(ModelSpec(ref=ref))


def pil_preprocess(path: str, mean: np.ndarray = MEAN, std: np.ndarray = STD) -> np.ndarray:
    """The usual recipe: PIL open, RGB, shorter side 256, centre crop 224, normalise, CHW."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


def _forward(model: Any, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(batch)))
    return (out["features"] if isinstance(out, dict) else out).numpy()


# -- limit -----------------------------------------------------------------------------------------
def limit_model(ref: str, batch: int, batches: int) -> dict[str, Any]:
    """Model only, preloaded batches, every core: the fastest way gristmill runs this model.

    Two builds, timed batch by batch in turns in this one process so that a change in the
    machine's speed hits both alike: the module as written, and the inference graph exactly as
    CPU workers build it (``share_weights`` in the driver, then ``load_shared``: BatchNorm folded,
    residual sums in place, weights mapped from the shared file). The faster one is the limit, so
    gristmill's steady state over it is the pipeline's efficiency, not the graph rewrite's gain.
    """
    import tempfile

    from gristmill.models import create, share_weights
    from gristmill.models.torch import TorchModel, build_module
    from gristmill.spec import ModelSpec
    from gristmill.tuning import tune_allocator

    spec, outputs = ModelSpec(ref=ref), ("features",)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    tune_allocator()
    with tempfile.TemporaryDirectory(prefix="gm-limit-") as folder:
        path = share_weights(spec, folder, None, outputs)
        models = {
            # prebuilt: setup runs the module as given, with no graph rewrite
            "module": TorchModel(spec=spec, outputs=outputs, threads=cores(),
                                 prebuilt=build_module(spec)),
            "graph": create(spec, outputs=outputs, device="cpu", threads=cores(),
                            shared_weights=path),
        }
        seconds = dict.fromkeys(models, 0.0)
        for model in models.values():
            model.setup()
            model.predict(x)  # first-call allocations and kernel choice, not counted
        for _ in range(batches):
            for name, model in models.items():
                start = time.perf_counter()
                model.predict(x)
                seconds[name] += time.perf_counter() - start
    best = min(seconds, key=seconds.__getitem__)
    return {"images": batch * batches, "seconds": seconds[best], "fastest": best,
            **{f"{name}_rate": batch * batches / s for name, s in seconds.items()}}


def _decode_one(args: tuple[str, Any]) -> int:
    from gristmill.transforms import load_into

    path, pre = args
    row = np.empty(pre.item_shape(), np.float32)
    load_into(os.fsencode(path), row, pre, 1 << 30)
    return 1


def limit_decode(paths: list[str], preset: str) -> dict[str, Any]:
    """Decode + preprocess only (gristmill's transforms), one process per core."""
    from gristmill.models import torch as tm

    pre = (tm.EFFICIENTNET_PRESET if preset == "efficientnet" else tm.IMAGENET_PRESET).complete()
    with get_context("spawn").Pool(cores()) as pool:
        pool.map(_decode_one, [(paths[0], pre)] * cores())  # start-up, not counted
        start = time.perf_counter()
        n = sum(pool.imap_unordered(_decode_one, [(p, pre) for p in paths], chunksize=4))
    return {"images": n, "seconds": time.perf_counter() - start}


# -- seeds -----------------------------------------------------------------------------------------
def _naive_item(args: tuple[str, str]) -> int:
    import torch

    torch.set_num_threads(1)
    path, ref = args
    model = build(ref)  # the seed's mistake: the model is loaded for every image
    _forward(model, pil_preprocess(path)[None])
    return 1


def seed_naive(paths: list[str], ref: str) -> dict[str, Any]:
    start = time.perf_counter()
    with get_context("spawn").Pool(cores()) as pool:
        n = sum(pool.map(_naive_item, [(p, ref) for p in paths]))
    return {"images": n, "seconds": time.perf_counter() - start}


def _tuned_init(ref: str) -> None:
    import torch

    global _MODEL
    torch.set_num_threads(1)
    _MODEL = build(ref)


def _tuned_batch(paths: list[str]) -> int:
    _forward(_MODEL, np.stack([pil_preprocess(p) for p in paths]))
    return len(paths)


def seed_tuned(paths: list[str], ref: str, batch: int) -> dict[str, Any]:
    """Pool with an initializer (model once per process), batches of paths."""
    start = time.perf_counter()
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    with get_context("spawn").Pool(cores(), initializer=_tuned_init, initargs=(ref,)) as pool:
        n = sum(pool.imap_unordered(_tuned_batch, chunks))
    return {"images": n, "seconds": time.perf_counter() - start}


# -- torch DataLoader ------------------------------------------------------------------------------
class _Files:
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch

        return torch.from_numpy(pil_preprocess(self.paths[i]))


def dataloader(paths: list[str], ref: str, batch: int, workers: int) -> dict[str, Any]:
    """torch DataLoader + PIL transforms, model in the main process on every core."""
    import torch
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    torch.set_num_threads(cores())
    model = build(ref).to(memory_format=torch.channels_last)
    loader = DataLoader(_Files(paths), batch_size=batch, num_workers=workers,
                        multiprocessing_context="spawn" if workers else None)
    n = 0
    with torch.inference_mode():
        for x in loader:
            model(x.contiguous(memory_format=torch.channels_last))
            n += len(x)
    return {"images": n, "seconds": time.perf_counter() - start, "num_workers": workers}


# -- gristmill -------------------------------------------------------------------------------------
def gristmill_run(folder: str, out: str, ref: str, **options: Any) -> dict[str, Any]:
    """gristmill with its defaults (options only for the memory case's worker count).

    What ``gristmill.run`` does, spelled out so the batches' arrival times can be recorded: the
    steady-state rate runs from the first batch done to the last (start-up excluded), comparable
    with the limit; ``seconds`` is end to end, comparable with the alternatives.
    """
    from gristmill import driver, ledger
    from gristmill.engines import forkserver
    from gristmill.engines.local import LocalEngine
    from gristmill.engines.messages import Progress, WorkerReady
    from gristmill.job import prepare
    from gristmill.spec import JobSpec, ModelSpec

    start = time.perf_counter()
    spec = JobSpec(sources=(folder,), out=out, model=ModelSpec(ref=ref), outputs=("features",),
                   overwrite=True, progress=False, **options)
    warmup = forkserver.warm()
    job = prepare(spec, settle=warmup.settle)
    seen: list[tuple[float, int]] = []
    workers: list[dict[str, Any]] = []

    def on_event(message: Any) -> None:
        if isinstance(message, Progress):
            seen.append((time.perf_counter(), message.items))
        elif isinstance(message, WorkerReady):
            workers.append({"threads": message.threads, "loaders": message.loaders})

    engine = LocalEngine(job.spec, os.path.join(job.spec.out, ledger.INPUTS_FILE), job.workers,
                         on_event)
    failed = engine.run(job.pending)
    driver.refresh_view(job.state)
    seconds = time.perf_counter() - start
    assert not failed, failed
    steady = (sum(n for _, n in seen[1:]), seen[-1][0] - seen[0][0]) if len(seen) > 1 else (0, 0)
    return {"images": sum(n for _, n in seen), "seconds": seconds, "workers": workers,
            "steady_images": steady[0], "steady_seconds": steady[1],
            "prepare_seconds": seen[0][0] - start if seen else 0.0}


def plan_scale(list_file: str, out: str, resume: bool, shard_size: int = 1024) -> dict[str, Any]:
    """Prepare (list, plan, ledger) a job over a list file; with ``resume`` OUT already has it."""
    from gristmill.job import prepare
    from gristmill.spec import JobSpec

    spec = JobSpec(sources=(list_file,), out=out, device="cpu", workers=1, threads=1, loaders=1,
                   overwrite=not resume, shard_size=shard_size)
    start = time.perf_counter()
    job = prepare(spec)
    return {"images": len(job.inputs), "seconds": time.perf_counter() - start,
            "shards": len(job.shards), "done": len(job.state.done)}


def list_scale(list_file: str) -> dict[str, Any]:
    """List the loose files a list file names (what a new job's driver does first)."""
    from gristmill.sources import list_inputs

    start = time.perf_counter()
    inputs = list_inputs([list_file])
    return {"images": len(inputs), "seconds": time.perf_counter() - start}


CASES = {f.__name__: f for f in (limit_model, limit_decode, seed_naive, seed_tuned, dataloader,
                                 gristmill_run, plan_scale, list_scale)}

if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    result = CASES[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result, default=str), flush=True)
