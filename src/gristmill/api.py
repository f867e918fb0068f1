"""The Python API: ``run`` a job, ``open`` its output.

Example::

    import gristmill

    report = gristmill.run(["photos/"], "out/", outputs=["features", "logits"])
    with gristmill.open("out/") as result:
        names, feats = result.names, result["features"][:]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import ledger, sinks
from .engines import base as engines
from .errors import SpecError
from .named import parse_model
from .spec import JobSpec, ModelSpec, Preprocess

if TYPE_CHECKING:
    from .progress import Report
    from .sinks.base import Result


def run(sources: Sequence[str] | str | JobSpec, out: str | None = None, *,
        model: str | type | ModelSpec = "efficientnet-lite0", outputs: Sequence[str] = (),
        preprocess: Preprocess | None = None,
        models: dict[str, str | type | ModelSpec] | None = None, **options: Any) -> Report:
    """Run a model over every input of ``sources`` into ``out``; returns the run's ``Report``.

    ``model`` is a reference (``--model``'s forms), a ``ModelSpec``, or a callable class (Ray
    Data's way, see ``gristmill.models.classes``) defined in an importable module.
    ``sources`` may also be a ready ``JobSpec`` (then ``out`` and the rest are ignored). Options are
    the ``JobSpec`` fields (``batch_size``, ``shard_size``, ``workers``, ``device``, ``overwrite``,
    ...). ``models`` runs several models in one pass: ``{"clip": "hf:./clip", "nsfw":
    "nsfw.onnx", "aesthetic": "heads:Aesthetic@clip/image_embeds"}`` (a ``ModelSpec`` value
    carries its own ``preprocess`` overrides), outputs ``NAME/OUTPUT``. Rerunning the same call
    resumes. Raises ``SpecError`` for a bad job (nothing started) and
    ``JobFailed`` when shards failed every attempt (committed shards are kept).
    """
    if isinstance(sources, JobSpec):
        spec = sources
    else:
        if out is None:
            raise TypeError("run() needs an output folder")
        spec = JobSpec(
            sources=(sources,) if isinstance(sources, str) else tuple(sources), out=out,
            model=model if isinstance(model, ModelSpec) else ModelSpec(ref=model_ref(model)),
            models=named_models(models or {}), outputs=tuple(outputs),
            preprocess=preprocess or Preprocess(), **options)
    return execute(spec)


def model_ref(model: str | type) -> str:
    """``package.module:Class`` for a class (workers import it by that name), else ``model``."""
    if isinstance(model, str):
        return model
    if model.__module__ == "__main__" or "<locals>" in model.__qualname__:
        raise SpecError(f"model class {model.__qualname__} must be defined at the top level of an "
                        "importable module: worker processes import it by name")
    return f"{model.__module__}:{model.__qualname__}"


def named_models(models: dict[str, str | type | ModelSpec]) -> tuple[ModelSpec, ...]:
    """``run(models=...)``'s dict as named ``ModelSpec``s (``REF@OTHER/OUTPUT``: a head)."""
    found = []
    for name, model in models.items():
        if isinstance(model, ModelSpec):
            found.append(dataclasses.replace(model, name=name))
            continue
        _, ref, source = parse_model(f"{name}={model_ref(model)}")
        found.append(ModelSpec(ref=ref, name=name, input=source))
    return tuple(found)


def execute(spec: JobSpec, command: str | None = None) -> Report:
    """Prepare, run the pending shards on the spec's engine, and refresh ``features.h5``.

    OUT is locked first (``ledger.lock_out``: one driver per OUT), before any process starts,
    and stays locked until the view and the report are built. ``command`` is how the run is
    named in its log and report (the CLI gives its command line).
    """
    spec.check()  # before starting anything for it
    with ledger.lock_out(spec.out) as lock:
        # the engine's processes start now, their imports overlapping the preparation
        backend = engines.backend(spec)
        try:
            # the job's own modules (numpy, the sources, h5py, ...) only now: the backend's
            # start (the fork server's) does not wait for them
            from .driver import run_job

            return run_job(spec, backend, command, lock)
        finally:
            backend.close()  # what the engine did not take (a job that failed early)


def open(out: str) -> Result:
    """Open a job's output in any format: ``.names``, ``["output"]``, ``.errors``, ``.columns``.

    HDF5 outputs are read lazily from ``features.h5`` (h5py datasets; close the result);
    Parquet and npy outputs are read from their committed shards into numpy arrays.
    """
    if os.path.isfile(out):  # a view file itself (``out/features.h5``)
        return sinks.open_file(out)
    from .outdir import open_result  # numpy and the sources: not before a run's engine starts

    return open_result(out)
