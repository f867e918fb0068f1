"""Image-text pairs in one pass (``--modality image+text``): both towers of a dual encoder.

Each sample (a Parquet row: image cell + ``--text-column``; a tar sample: image member + caption
from its ``.txt`` member or a ``.json`` field named by ``--text-column``) goes through the image
tower and, with its own caption, the text tower, in the same worker step (``loader.pairs`` fills
the rows). Outputs: the image tower's (``image_embeds``, ...), ``text_embeds``, and
``clip_score``: 100 x the cosine of the two embeddings, as DataComp computes it (unclipped).

``resolve`` (driver) refuses a model without a text tower in one line, completes the
preprocessing and outputs, and picks the caption's column: ``--text-column``, else ``txt`` for
tars (the ``.txt`` member) and ``caption`` for Parquet tables.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..errors import SpecError
from ..loader.multi import layout
from ..spec import JobSpec
from . import capabilities, check_outputs, create, describe, text_encoding
from .base import ModelCache, ModelInfo

TEXT_OUTPUTS = ("text_embeds", "clip_score")
DEFAULTS = ("image_embeds", "text_embeds", "clip_score")


def resolve(spec: JobSpec, cache: ModelCache | None = None) -> JobSpec:
    from ..sources import Kind, classify

    caps = capabilities(spec.model)
    if "text" not in caps.modalities:
        raise SpecError(f"--modality image+text: model {spec.model.ref} has no text tower "
                        "(give a dual encoder: hf: CLIP or SigLIP)")
    if spec.precision not in caps.precisions:
        raise SpecError(f"--precision {spec.precision}: model {spec.model.ref} runs only "
                        f"{', '.join(sorted(caps.precisions))} (drop --precision)")
    info = describe(spec.model, cache)
    describe(spec.model, cache, "text")  # the tokenizer and the text tower load
    if "image_embeds" not in info.outputs:
        raise SpecError(f"--modality image+text: model {spec.model.ref} has no image_embeds")
    every = ModelInfo(outputs=(*info.outputs, *TEXT_OUTPUTS), default_outputs=DEFAULTS,
                      preset=info.preset)
    outputs = check_outputs(spec.outputs, every, spec.model.ref)
    kinds = [classify(s) for s in spec.sources]
    if not all(kinds):
        raise SpecError("--modality image+text reads tars (image + .txt or .json caption) or "
                        "Parquet tables (image column + --text-column), not loose files")
    caption = spec.text_column or ("txt" if kinds[0][0] == Kind.TAR else "caption")
    return dataclasses.replace(spec, outputs=outputs, text_column=caption,
                               preprocess=spec.preprocess.over(info.preset).complete())


class PairModel:
    """Both towers of the job's dual encoder in one worker (see the module docstring)."""

    def __init__(self, spec: JobSpec, *, device: str, threads: int,
                 shared_weights: str | None = None, cache: ModelCache | None = None) -> None:
        self.spec, self.device, self.threads, self.cache = spec, device, threads, cache
        self.segment = layout([spec.preprocess])[0]
        self.encoding = text_encoding(spec.model)
        self.image_outputs = tuple(dict.fromkeys(
            ["image_embeds", *(o for o in spec.outputs if o not in TEXT_OUTPUTS)]))
        self.capabilities = dataclasses.replace(capabilities(spec.model), modalities=frozenset(
            {"image", "text"}))
        self.image: Any = None
        self.text: Any = None
        self.seconds = {"image": 0.0, "text": 0.0}

    @property
    def row_length(self) -> int:
        return self.segment.size + 2 * self.encoding.length

    def fill(self, options: dict[str, Any]) -> tuple[Any, tuple[int, ...], str]:
        """What the loaders fill slots with: (fill, row shape, dtype)."""
        from ..loader.pairs import PairFill

        fill = PairFill(self.segment, self.encoding, self.spec.text_column,
                        self.spec.text_column in self.spec.keep_columns,
                        self.spec.max_image_pixels, options)
        return fill, (self.row_length,), "float32"

    def setup(self) -> None:
        common = dict(device=self.device, threads=self.threads, precision=self.spec.precision,
                      cache=self.cache)
        self.image = create(self.spec.model, outputs=self.image_outputs,
                            preprocess=self.spec.preprocess, **common)
        self.text = create(self.spec.model, outputs=("text_embeds",), modality="text", **common)
        self.image.setup()
        self.text.setup()

    def pin_host(self, address: int, nbytes: int) -> None:
        if self.capabilities.pinned_input:
            self.image.pin_host(address, nbytes)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        rows = batch.reshape(len(batch), -1)
        size, length = self.segment.size, self.encoding.length
        tokens = rows[:, size:size + 2 * length].reshape(len(rows), 2, length).astype(np.int64)
        start = time.perf_counter()
        found = dict(self.image.predict(self.segment.view(rows)))
        middle = time.perf_counter()
        found |= self.text.predict(tokens)
        self.seconds["image"] += middle - start
        self.seconds["text"] += time.perf_counter() - middle
        if "clip_score" in self.spec.outputs:
            found["clip_score"] = clip_score(found["image_embeds"], found["text_embeds"])
        return {k: found[k] for k in self.spec.outputs}

    def take_seconds(self) -> dict[str, float]:
        """Each tower's seconds since the last call (the runner adds them to the receipt)."""
        spent, self.seconds = self.seconds, {"image": 0.0, "text": 0.0}
        return spent

    def teardown(self) -> None:
        for model in (self.image, self.text):
            if model is not None:
                model.teardown()
        self.image = self.text = None


def clip_score(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """100 x the cosine of each row's two embeddings (float32, one value per row)."""
    a, b = image.astype(np.float64), text.astype(np.float64)
    cos = (a * b).sum(axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (100.0 * cos).astype(np.float32)
