"""Image-text pairs in one pass (``--modality image+text``): both towers of a dual encoder.

Each sample (a Parquet row: image cell + ``--text-column``; a tar sample: image member + caption
from its ``.txt`` member or a ``.json`` field named by ``--text-column``) goes through the image
tower and, with its own caption, the text tower, in the same worker step (``loader.pairs`` fills
the rows). Outputs: the image tower's (``image_embeds``, ...), ``text_embeds``, and
``clip_score``: 100 x the cosine of the two embeddings, as DataComp computes it (unclipped).

``resolve`` (driver) refuses a model without a text tower in one line, completes the
preprocessing and outputs, and picks the caption's column (``caption_column``: ``--text-column``,
else ``txt`` for tars, the ``.txt`` member, and ``caption`` for Parquet tables).

With several named models (``models.multi``), every image model with a text tower is *paired*:
its outputs ``NAME/text_embeds`` and ``NAME/clip_score`` come from the same pass (``Towers``),
while the other models see only the images.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..errors import SpecError
from ..loader.multi import layout
from ..loader.pairs import TokenSlot
from ..spec import JobSpec, ModelSpec, Preprocess
from . import capabilities, check_outputs, create, describe, text_encoding
from .base import Capabilities, ModelCache, ModelInfo

TEXT_OUTPUTS = ("text_embeds", "clip_score")
DEFAULTS = ("image_embeds", "text_embeds", "clip_score")


def resolve(spec: JobSpec, cache: ModelCache | None = None) -> JobSpec:
    caps = capabilities(spec.model)
    if "text" not in caps.modalities:
        raise SpecError(f"--modality image+text: model {spec.model.ref} has no text tower "
                        "(give a dual encoder: hf: CLIP or SigLIP)")
    if spec.precision not in caps.precisions:
        raise SpecError(f"--precision {spec.precision}: model {spec.model.ref} runs only "
                        f"{', '.join(sorted(caps.precisions))} (drop --precision)")
    info = describe_pair(spec.model, cache)
    outputs = check_outputs(spec.outputs, info, spec.model.ref)
    return dataclasses.replace(spec, outputs=outputs, text_column=caption_column(spec),
                               preprocess=spec.preprocess.over(info.preset).complete())


def is_paired(spec: JobSpec, model: ModelSpec, caps: Capabilities) -> bool:
    """Whether ``model`` runs both towers in this job (an image model with a text tower, in an
    ``image+text`` job)."""
    return spec.modality == "image+text" and not model.input and "text" in caps.modalities


def describe_pair(model: ModelSpec, cache: ModelCache | None = None) -> ModelInfo:
    """The image tower's outputs with ``text_embeds`` and ``clip_score``; the text tower and
    its tokenizer are loaded once here, so a broken one fails in the driver."""
    info = describe(model, cache)
    describe(model, cache, "text")
    if "image_embeds" not in info.outputs:
        raise SpecError(f"--modality image+text: model {model.ref} has no image_embeds")
    return ModelInfo(outputs=(*info.outputs, *TEXT_OUTPUTS), default_outputs=DEFAULTS,
                     preset=info.preset)


def caption_column(spec: JobSpec) -> str:
    """Where a sample's caption is: ``--text-column``, else a tar's ``.txt`` member or a Parquet
    table's ``caption``; loose files have none (a one-line error)."""
    from ..sources import classify

    kinds = [classify(s) for s in spec.sources]
    if not all(kinds):
        raise SpecError("--modality image+text reads tars (image + .txt or .json caption) or "
                        "Parquet tables (image column + --text-column), not loose files")
    # a kind with text columns (tables) names its caption column; a tar's is its .txt member
    return spec.text_column or ("caption" if "text_column" in kinds[0][0].reads else "txt")


class Towers:
    """Both towers of one dual encoder in one worker: ``predict(pixels, tokens)`` gives the
    ``outputs`` asked for (image ones, ``text_embeds``, ``clip_score``)."""

    def __init__(self, model: ModelSpec, outputs: tuple[str, ...], preprocess: Preprocess, *,
                 device: str, threads: int, precision: str,
                 cache: ModelCache | None = None) -> None:
        self.model, self.outputs, self.preprocess = model, outputs, preprocess
        self.options = dict(device=device, threads=threads, precision=precision, cache=cache)
        self.image_outputs = tuple(dict.fromkeys(
            ["image_embeds", *(o for o in outputs if o not in TEXT_OUTPUTS)]))
        self.image: Any = None
        self.text: Any = None
        self.seconds = {"image": 0.0, "text": 0.0}

    def setup(self) -> None:
        self.image = create(self.model, outputs=self.image_outputs, preprocess=self.preprocess,
                            **self.options)
        self.text = create(self.model, outputs=("text_embeds",), modality="text", **self.options)
        self.image.setup()
        self.text.setup()

    def pin_host(self, address: int, nbytes: int) -> None:
        self.image.pin_host(address, nbytes)  # the image tower's copies are the large ones

    def predict(self, pixels: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        found = dict(self.image.predict(pixels))
        middle = time.perf_counter()
        found |= self.text.predict(tokens)
        self.seconds["image"] += middle - start
        self.seconds["text"] += time.perf_counter() - middle
        if "clip_score" in self.outputs:
            found["clip_score"] = clip_score(found["image_embeds"], found["text_embeds"])
        return {k: found[k] for k in self.outputs}

    def teardown(self) -> None:
        for model in (self.image, self.text):
            if model is not None:
                model.teardown()
        self.image = self.text = None


class PairModel:
    """Both towers of the job's dual encoder in one worker (see the module docstring)."""

    def __init__(self, spec: JobSpec, *, device: str, threads: int,
                 shared_weights: str | None = None, cache: ModelCache | None = None) -> None:
        self.spec = spec
        self.segment = layout([spec.preprocess])[0]
        self.tokens = TokenSlot(self.segment.size, text_encoding(spec.model))
        self.towers = Towers(spec.model, spec.outputs, spec.preprocess, device=device,
                             threads=threads, precision=spec.precision, cache=cache)
        self.capabilities = dataclasses.replace(capabilities(spec.model), modalities=frozenset(
            {"image", "text"}))

    def fill(self, options: dict[str, Any]) -> tuple[Any, tuple[int, ...], str]:
        """What the loaders fill slots with: (fill, row shape, dtype)."""
        from ..loader.pairs import PairFill

        fill = PairFill((self.segment,), (self.tokens,), self.spec.text_column,
                        self.spec.text_column in self.spec.keep_columns,
                        self.spec.max_image_pixels, options)
        return fill, (self.segment.size + self.tokens.size,), "float32"

    def setup(self) -> None:
        self.towers.setup()

    def pin_host(self, address: int, nbytes: int) -> None:
        if self.capabilities.pinned_input:
            self.towers.pin_host(address, nbytes)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        rows = batch.reshape(len(batch), -1)
        return self.towers.predict(self.segment.view(rows), self.tokens.view(rows))

    def take_seconds(self) -> dict[str, float]:
        """Each tower's seconds since the last call (the runner adds them to the receipt)."""
        spent, self.towers.seconds = self.towers.seconds, {"image": 0.0, "text": 0.0}
        return spent

    def teardown(self) -> None:
        self.towers.teardown()


def clip_score(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """100 x the cosine of each row's two embeddings (float32, one value per row)."""
    a, b = image.astype(np.float64), text.astype(np.float64)
    cos = (a * b).sum(axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (100.0 * cos).astype(np.float32)
