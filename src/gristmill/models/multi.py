"""Several named models in one pass: resolving them in the driver, running them in a worker.

``resolve(spec, cache)`` (driver) describes every model of ``JobSpec.models``, gives each image
model its preprocessing (its own overrides over the job's over its preset, so each keeps its
preset), checks and completes ``NAME/OUTPUT`` outputs, and checks every head's input: the output
must exist, and its row shape (found by running the input model on a zero image) is what the head
is described with.

``MultiModel`` (worker) is the ``Model`` of such a job: its batches are slot rows holding one
segment per distinct preprocessing (``loader.multi``), and ``predict`` runs the image models on
their segments, then the heads on the rows they read, in dependency order, and returns the stored
outputs as ``NAME/OUTPUT``. Each model runs at the job's precision where its backend can (fp32
otherwise), with the worker's threads (they run one after another), and maps the weights the
driver saved for it (``share_weights``: one file per model, listed in one JSON file, so the
worker plan keeps one path). ``seconds`` holds each model's time, for the calibration's split
and the report. With ``--modality image+text`` each image model with a text tower is *paired*: its
row also holds a token slot for the sample's caption (``loader.pairs``) and it runs both towers
(``pairs.Towers``), adding ``NAME/text_embeds`` and ``NAME/clip_score``.

``composite`` is the worker's model for such a job, or for one dual encoder's pairs
(``pairs.PairModel``); each offers ``fill`` (what its loaders write) and ``take_seconds``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import named
from ..errors import SpecError
from ..loader.multi import MultiFill, Segment, layout, row_length
from ..loader.pairs import TokenSlot
from ..spec import JobSpec, ModelSpec, Preprocess
from . import (
    capabilities,
    check_outputs,
    create,
    describe,
    heads,
    kind_of,
    pairs,
    share_weights,
    text_encoding,
)
from .base import Capabilities, ModelCache, ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One model of the pass: what it reads (a segment, or ``input``) and what it must give."""

    spec: ModelSpec
    needed: tuple[str, ...]  # its outputs stored or read by a head
    caps: Capabilities
    paired: bool = False  # image+text: both towers of a dual encoder (``pairs.Towers``)


def _absolute(model: ModelSpec) -> ModelSpec:
    for name in ("weights", "mean_file"):
        value = getattr(model, name)
        if value:
            model = dataclasses.replace(model, **{name: os.path.abspath(value)})
    if kind_of(model.ref) != "builtin" and os.path.exists(model.ref):
        model = dataclasses.replace(model, ref=os.path.abspath(model.ref))
    return model


def resolve(spec: JobSpec, cache: ModelCache | None = None) -> JobSpec:
    """The spec with each model resolved (preprocessing, paths) and the outputs completed (or,
    for ``--modality image+text``, its dual encoder's: ``pairs.resolve``)."""
    if not spec.models:
        from .pairs import resolve as resolve_pairs

        return resolve_pairs(dataclasses.replace(spec, model=_absolute(spec.model)), cache)
    wanted: dict[str, list[str]] = {m.name: [] for m in spec.models}
    for output in spec.outputs:
        name, rest = named.split_output(output)
        wanted[name].append(rest)
    read = {m.input for m in spec.models if m.input}
    resolved: dict[str, ModelSpec] = {}
    outputs: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}  # NAME/OUTPUT -> row shape, for the heads
    any_paired = False
    for model in named.order(spec.models):
        model = _absolute(model)
        caps = _capabilities(model)
        if model.normalize and not caps.normalize:  # --normalize for all: where it means one
            model = dataclasses.replace(model, normalize=False)
        if model.input:
            every, defaults = heads.describe(model, shapes[model.input], cache)
        else:
            paired = pairs.is_paired(spec, model, caps)
            info = pairs.describe_pair(model, cache) if paired else describe(model, cache)
            every, defaults = info.outputs, info.default_outputs
            any_paired = any_paired or paired
            pre = (model.preprocess or Preprocess()).over(spec.preprocess.over(info.preset))
            model = dataclasses.replace(model, preprocess=pre.complete())
        mine = tuple(wanted[model.name]) or defaults
        check = ModelInfo(outputs=every, default_outputs=defaults, preset=Preprocess())
        mine = check_outputs(mine, check, f"{model.name} ({model.ref})")
        fed = [i for i in read if named.split_output(i)[0] == model.name]
        if spec.outputs and not wanted[model.name] and not fed:
            raise SpecError(f"model {model.name}: --outputs stores none of its outputs and no "
                            f"head reads it (add {model.name}/OUTPUT)")
        for source in fed:
            if named.split_output(source)[1] not in every:
                reader = next(m.name for m in spec.models if m.input == source)
                raise SpecError(f"model {reader} reads {source}: model {model.name} has no "
                                f"output {named.split_output(source)[1]!r}")
        if not spec.outputs:
            outputs += [f"{model.name}/{o}" for o in mine]
        resolved[model.name] = model
        if fed:
            shapes |= _row_shapes(model, _needed(model.name, mine, read), shapes, cache)
            if pairs.is_paired(spec, model, caps):  # a text embedding is as wide as the image's
                shapes[f"{model.name}/text_embeds"] = shapes[f"{model.name}/image_embeds"]
                shapes[f"{model.name}/clip_score"] = ()
    models = tuple(resolved[m.name] for m in spec.models)
    text_column = spec.text_column
    if spec.modality == "image+text":
        if not any_paired:
            raise SpecError("--modality image+text: no model has a text tower (name a dual "
                            "encoder: hf: CLIP or SigLIP)")
        text_column = pairs.caption_column(spec)
    return dataclasses.replace(spec, models=models, text_column=text_column,
                               outputs=tuple(spec.outputs) or tuple(outputs))


def _capabilities(model: ModelSpec) -> Capabilities:
    return heads.capabilities(model) if model.input else capabilities(model)


def _needed(name: str, stored: Sequence[str], read: set[str]) -> tuple[str, ...]:
    fed = [named.split_output(i)[1] for i in sorted(read) if named.split_output(i)[0] == name]
    return tuple(dict.fromkeys([*stored, *fed]))


def _row_shapes(model: ModelSpec, outputs: tuple[str, ...], shapes: dict[str, tuple[int, ...]],
                cache: ModelCache | None) -> dict[str, tuple[int, ...]]:
    """The row shape of each of ``outputs``, from one zero input through the model (driver)."""
    if pairs.TEXT_OUTPUTS[0] in outputs or pairs.TEXT_OUTPUTS[1] in outputs:
        # a paired model's text outputs: shaped after its image embedding (resolve)
        outputs = tuple(dict.fromkeys(
            ["image_embeds", *(o for o in outputs if o not in pairs.TEXT_OUTPUTS)]))
    if model.input:
        runner = heads.create(model, outputs=outputs, device="cpu", threads=0, cache=cache)
        x = np.zeros((1, *shapes[model.input]), np.float32)
    else:
        assert model.preprocess is not None
        runner = create(model, outputs=outputs, device="cpu", threads=0, cache=cache,
                        preprocess=model.preprocess)
        x = np.zeros((1, *model.preprocess.item_shape()), np.float32)
    try:
        runner.setup()
        found = runner.predict(x, **({"names": ["probe"]} if _capabilities(model).names else {}))
    except SpecError:
        raise
    except Exception as exc:
        from ..errors import first_line

        raise SpecError(f"model {model.name} ({model.ref}) fails on a zero input: "
                        f"{first_line(exc)}") from None
    finally:
        runner.teardown()
    return {f"{model.name}/{k}": tuple(np.asarray(v).shape[1:]) for k, v in found.items()}


def steps(spec: JobSpec) -> list[Step]:
    """The resolved spec's models in run order, each with the outputs it must give."""
    read = {m.input for m in spec.models if m.input}
    stored: dict[str, list[str]] = {m.name: [] for m in spec.models}
    for output in spec.outputs:
        name, rest = named.split_output(output)
        stored[name].append(rest)
    found = []
    for m in named.order(spec.models):
        caps = _capabilities(m)
        found.append(Step(m, _needed(m.name, stored[m.name], read), caps,
                          pairs.is_paired(spec, m, caps)))
    return found


def segments(spec: JobSpec) -> tuple[Segment, ...]:
    """The row layout of a resolved spec: one segment per distinct preprocessing."""
    return layout(m.preprocess for m in named.order(spec.models)
                  if not m.input and m.preprocess is not None)


def share_all(spec: JobSpec, folder: str, cache: ModelCache | None = None) -> str | None:
    """Driver: each model's weights saved for CPU workers to map, listed in one JSON file (its
    path is the workers' ``shared_weights``); None when no model can share."""
    saved = {}
    for step in steps(spec):
        if step.spec.input or not step.caps.shared_weights:
            continue
        path = share_weights(step.spec, os.path.join(folder, step.spec.name), cache, step.needed)
        if path:
            saved[step.spec.name] = path
    if not saved:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"models-{spec.identity_hash()}.json")
    with open(f"{path}.tmp", "w") as f:
        json.dump(saved, f)
    os.replace(f"{path}.tmp", path)
    return path


def composite(spec: JobSpec, *, device: str, threads: int,
              shared_weights: str | None = None) -> Any:
    """The worker's model for several models (``MultiModel``) or an image-text pair job
    (``pairs.PairModel``); each has ``capabilities`` and ``fill`` (what its loaders write)."""
    if spec.models:
        return MultiModel(spec, device=device, threads=threads, shared_weights=shared_weights)
    from .pairs import PairModel

    return PairModel(spec, device=device, threads=threads, shared_weights=shared_weights)


class MultiModel:
    """Every model of the job in one worker (see the module docstring)."""

    def __init__(self, spec: JobSpec, *, device: str, threads: int,
                 shared_weights: str | None = None, cache: ModelCache | None = None) -> None:
        self.spec, self.device, self.threads, self.cache = spec, device, threads, cache
        self.steps = steps(spec)
        self.segments = segments(spec)
        self.outputs = spec.outputs
        self.slots: dict[str, Any] = {}  # image+text: a token slot per paired model
        offset = row_length(self.segments)
        for step in self.steps:
            if step.paired:
                self.slots[step.spec.name] = TokenSlot(offset, text_encoding(step.spec))
                offset += self.slots[step.spec.name].size
        self.row_length = offset
        self.shared = _read_shared(shared_weights)
        self.models: list[Any] = []
        self.seconds = {s.spec.name: 0.0 for s in self.steps}
        self.capabilities = Capabilities(
            names=any(s.caps.names for s in self.steps),
            pinned_input=any(s.caps.pinned_input for s in self.steps))

    def fill(self, options: dict[str, Any]) -> tuple[Any, tuple[int, ...], str]:
        """What the loaders fill slots with: (fill, row shape, dtype)."""
        if self.slots:  # captions too: one decode and each paired model's tokens per row
            from ..loader.pairs import PairFill

            spec = self.spec
            fill: Any = PairFill(self.segments, tuple(self.slots.values()), spec.text_column,
                                 spec.text_column in spec.keep_columns, spec.max_image_pixels,
                                 options)
        else:
            fill = MultiFill(self.segments, self.spec.max_image_pixels, options)
        return fill, (self.row_length,), "float32"

    def _precision(self, step: Step) -> str:
        return self.spec.precision if self.spec.precision in step.caps.precisions else "fp32"

    def setup(self) -> None:
        for step in self.steps:
            m = step.spec
            if step.paired:
                assert m.preprocess is not None
                model = pairs.Towers(m, step.needed, m.preprocess, device=self.device,
                                     threads=self.threads, precision=self._precision(step),
                                     cache=self.cache)
            elif m.input:
                model = heads.create(m, outputs=step.needed, device=self.device,
                                     threads=self.threads, precision=self._precision(step),
                                     cache=self.cache)
            else:
                model = create(m, outputs=step.needed, device=self.device, threads=self.threads,
                               precision=self._precision(step),
                               shared_weights=self.shared.get(m.name), cache=self.cache,
                               preprocess=m.preprocess)
            model.setup()
            self.models.append(model)

    def pin_host(self, address: int, nbytes: int) -> None:
        """Page-lock the ring once, through the first model that can (the copies of every model
        then come from pinned memory)."""
        for step, model in zip(self.steps, self.models, strict=True):
            if step.caps.pinned_input and not step.spec.input:
                model.pin_host(address, nbytes)
                return

    def predict(self, batch: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        rows = batch.reshape(len(batch), -1)
        for step, model in zip(self.steps, self.models, strict=True):
            m = step.spec
            if m.input:
                x = values[m.input]
            else:
                x = next(s for s in self.segments if s.preprocess == m.preprocess).view(rows)
            kwargs: dict[str, Any] = (
                {"names": names} if step.caps.names and names is not None and not step.paired
                else {})
            if step.paired:
                kwargs["tokens"] = self.slots[m.name].view(rows)
            start = time.perf_counter()
            found = model.predict(x, **kwargs)
            self.seconds[m.name] += time.perf_counter() - start
            for key in step.needed:
                values[f"{m.name}/{key}"] = np.asarray(found[key])
        return {key: values[key] for key in self.outputs}

    def take_seconds(self) -> dict[str, float]:
        """Each model's seconds since the last call (the runner adds them to the receipt)."""
        spent, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return spent

    def teardown(self) -> None:
        for model in self.models:
            model.teardown()
        self.models.clear()


def calibrate(spec: JobSpec, inputs: Any, cores: int, *, sample: int = 8,
              cache: ModelCache | None = None) -> tuple[float | None, float | None]:
    """(decode rate, model rate) per core, as ``tuning.calibrate``: the decode makes every
    segment of a row from one decode, the model rate is that of all models one after another
    (their summed cost); each model's share is logged."""
    from ..loader.multi import fill_row, row_length
    from ..tuning import measure_decode

    layout_ = segments(spec)
    from ..sources import sample_refs

    refs = sample_refs(inputs, sample)
    decode = measure_decode(refs, None, spec.max_image_pixels, options=inputs.reader_options,
                            write=lambda data, row: fill_row(data, row, layout_,
                                                             spec.max_image_pixels),
                            shape=(row_length(layout_),))
    batch = 2
    timed = _time(spec, cores, batch, cache)
    model = None if timed is None else batch / timed[1] / cores
    log.info("calibration: decode %.1f img/s/core, models %.1f img/s/core",
             decode or 0.0, model or 0.0)
    return decode, model


def time_model(spec: JobSpec, threads: int, batch: int, cache: ModelCache | None = None,
               ) -> tuple[float, float] | None:
    """``tuning.time_model`` for several models: (first batch seconds, best later batch
    seconds) of all of them on the CPU (None: failed)."""
    timed = _time(spec, threads, batch, cache)
    return None if timed is None else (timed[0], timed[1])


def _time(spec: JobSpec, threads: int, batch: int, cache: ModelCache | None,
          ) -> tuple[float, float, dict[str, float]] | None:
    """(first, best later batch seconds, each model's share of that batch) on the CPU."""
    from ..tuning import SLOW_BATCH_SECONDS, release_memory

    try:
        multi = MultiModel(spec, device="cpu", threads=threads, cache=cache)
        multi.setup()
        x = np.zeros((batch, multi.row_length), np.float32)
        start = time.perf_counter()
        multi.predict(x, ["probe"] * batch)  # warm-up: first-call allocations, kernels
        first = time.perf_counter() - start
        best = float("inf")
        # one timed run at least: the warm-up of several models is far from their steady cost
        for _ in range(2 if first < SLOW_BATCH_SECONDS * len(multi.steps) else 1):
            multi.take_seconds()
            start = time.perf_counter()
            multi.predict(x, ["probe"] * batch)
            best = min(best, time.perf_counter() - start)
        spent = multi.take_seconds()
        multi.teardown()
    except Exception:  # calibration is advice: a model that cannot run here fails in the worker
        log.debug("model calibration failed", exc_info=True)
        return None
    finally:
        release_memory()
    total = sum(spent.values()) or 1.0
    shares = {k: v / total for k, v in spent.items()}
    log.info("calibration: model time %s",
             ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items()))
    return first, best, shares


def _read_shared(path: str | None) -> dict[str, str]:
    if not path or not os.path.isfile(path):  # another node (Ray): each model loads its own
        return {}
    with open(path) as f:
        return dict(json.load(f))
