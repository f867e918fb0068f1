"""Hugging Face snapshots: ``--model hf:PATH`` (a snapshot folder, or a model id already in the
local Hugging Face cache) for ``transformers`` vision models and dual encoders (CLIP, SigLIP,
DINOv2, ViT and others with the same outputs).

Reading the snapshot (its location, weights, preprocessing, the ``transformers`` model) is
``hf_snapshot``; this module is what runs.

Outputs (``ImageTower``): ``image_embeds`` (the projected embedding of ``get_image_features``;
unit vectors with ``--normalize``), ``pooled`` (the vision tower's pooler output), ``cls_token``
and ``patch_mean`` (summaries of ``last_hidden_state``: the first token where the model has a class
token, and the mean of the patch tokens), ``last_hidden_state`` itself, ``logits`` for
classifiers, and any submodule by its name in the ``transformers`` model (a forward hook).

Text (``--modality text``, dual encoders: a config with a ``text_config`` and a model with
``get_text_features``; ``TextTower``): ``text_embeds`` (the projected embedding of
``get_text_features``; unit vectors with ``--normalize``), ``pooled`` (the text tower's pooler
output), ``last_hidden_state``, and any submodule of the text tower by name. The snapshot's own
tokenizer runs in the loaders (``text_encoding``, ``loader.text``), padding and truncating every
caption to the text config's ``max_position_embeddings``; the model gets the attention mask only
where the tokenizer's ``model_input_names`` list it, as ``transformers`` would pass it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from ..errors import SpecError, first_line
from ..loader.text import TextEncoding
from ..spec import ModelSpec, Preprocess
from .base import Capabilities, ModelCache, ModelInfo
from .hf_snapshot import load_model, preset, read_json, snapshot, weight_files
from .torch import TorchModel, flatten_outputs, probe_outputs

CAPABILITIES = Capabilities(precisions=frozenset({"fp32", "fp16", "bf16"}), pinned_input=True,
                            driver_model=True, normalize=True)


TEXT_CAPABILITIES = dataclasses.replace(CAPABILITIES, modalities=frozenset({"image", "text"}))


def capabilities(spec: ModelSpec) -> Capabilities:
    """Text too where the snapshot's config has a text tower (dual encoders: CLIP, SigLIP)."""
    config = read_json(os.path.join(snapshot(spec.ref), "config.json"), spec.ref)
    return TEXT_CAPABILITIES if isinstance(config.get("text_config"), dict) else CAPABILITIES


# -- the module gristmill runs ---------------------------------------------------------------------
class ImageTower(nn.Module):
    """Named image outputs of a ``transformers`` model (see module docstring) from pixel values.

    ``named_modules`` are the wrapped model's own, so ``--outputs vision_model.encoder`` hooks the
    name a user reads in ``transformers``.
    """

    def __init__(self, model: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.tower = getattr(model, "vision_model", None) or model.base_model
        self._seen: dict[str, torch.Tensor] = {}
        self.tower.register_forward_hook(self._capture)

    def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True):
        return self.model.named_modules(memo, prefix, remove_duplicate)

    def _capture(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        for key in ("last_hidden_state", "pooler_output"):
            value = getattr(output, key, None)
            if isinstance(value, torch.Tensor):
                self._seen[key] = value  # the tensor itself: a caller may replace the field

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        self._seen = {}
        out: dict[str, torch.Tensor] = {}
        if hasattr(self.model, "get_image_features"):
            result = self.model.get_image_features(pixel_values=pixel_values)
            embeds = result if isinstance(result, torch.Tensor) else result.pooler_output
            out["image_embeds"] = _unit(embeds) if self.normalize else embeds
        else:
            result = self.model(pixel_values=pixel_values)
            logits = getattr(result, "logits", None)
            if isinstance(logits, torch.Tensor):
                out["logits"] = logits
        if "pooler_output" in self._seen:
            out["pooled"] = self._seen["pooler_output"]
        hidden = self._seen.get("last_hidden_state")
        if hidden is not None and hidden.ndim == 3:
            prefix = _prefix_tokens(hidden.shape[1], pixel_values.shape[-2:], self.model)
            if prefix:
                out["cls_token"] = hidden[:, 0]
            out["patch_mean"] = hidden[:, prefix:].mean(dim=1)
            out["last_hidden_state"] = hidden
        return out


class TextTower(nn.Module):
    """Named text outputs of a dual encoder (see module docstring) from token rows.

    Takes int64 ``(n, 2, length)``: token ids, then the attention mask (``loader.text``).
    ``named_modules`` are the text tower's, by their names in the ``transformers`` model.
    """

    def __init__(self, model: nn.Module, normalize: bool = False, use_mask: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.use_mask = use_mask
        self._seen: dict[str, torch.Tensor] = {}
        model.text_model.register_forward_hook(self._capture)

    def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True):
        for name, module in self.model.named_modules(memo, prefix, remove_duplicate):
            if name.split(".", 1)[0].startswith("text"):  # text_model.*, text_projection
                yield name, module

    def _capture(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        for key in ("last_hidden_state", "pooler_output"):
            value = getattr(output, key, None)
            if isinstance(value, torch.Tensor):
                self._seen[key] = value

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        self._seen = {}
        mask = {"attention_mask": tokens[:, 1]} if self.use_mask else {}
        result = self.model.get_text_features(input_ids=tokens[:, 0], **mask)
        embeds = result if isinstance(result, torch.Tensor) else result.pooler_output
        out = {"text_embeds": _unit(embeds) if self.normalize else embeds}
        if "pooler_output" in self._seen:
            out["pooled"] = self._seen["pooler_output"]
        if "last_hidden_state" in self._seen:
            out["last_hidden_state"] = self._seen["last_hidden_state"]
        return out


def _tokenizer(folder: str, ref: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise SpecError(f"model {ref}: the snapshot's tokenizer cannot be loaded: "
                        f"{first}") from None


def text_encoding(spec: ModelSpec) -> TextEncoding:
    """How the loaders tokenize for this snapshot (see ``loader.text``)."""
    import transformers

    folder = snapshot(spec.ref)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise SpecError(f"model {spec.ref}: transformers cannot read its config: "
                        f"{first_line(exc)}") from None
    length = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    if not isinstance(length, int) or length < 1:
        raise SpecError(f"model {spec.ref}: its text config has no max_position_embeddings")
    tok = _tokenizer(folder, spec.ref)
    if tok.pad_token_id is None:
        raise SpecError(f"model {spec.ref}: its tokenizer has no pad token; captions are padded "
                        "to one length")
    backend = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
    return TextEncoding(length=length, pad_id=int(tok.pad_token_id), folder=folder,
                        tokenizer_json=backend.to_str() if backend is not None else "",
                        padding_side=tok.padding_side, truncation_side=tok.truncation_side,
                        pad_token=str(tok.pad_token))


def build_text(spec: ModelSpec) -> TextTower:
    folder = snapshot(spec.ref)
    model = load_model(folder, spec.ref)
    if not hasattr(model, "get_text_features") or not hasattr(model, "text_model"):
        raise SpecError(f"--modality text: model {spec.ref} ({type(model).__name__}) has no "
                        "text tower")
    use_mask = "attention_mask" in _tokenizer(folder, spec.ref).model_input_names
    # get_text_features never reads the image side; dropping it halves a CLIP worker's weights
    for name in ("vision_model", "visual_projection"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)
    return TextTower(model, spec.normalize, use_mask).eval()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _prefix_tokens(tokens: int, hw: torch.Size, model: nn.Module) -> int:
    """Tokens before the patches (class token, registers): tokens minus the patch grid's size."""
    config = getattr(model.config, "vision_config", model.config)
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, int) or patch <= 0:
        return 0
    return max(0, tokens - (int(hw[0]) // patch) * (int(hw[1]) // patch))


def build(spec: ModelSpec) -> ImageTower:
    folder = snapshot(spec.ref)
    return ImageTower(load_model(folder, spec.ref), spec.normalize).eval()


def _tower(spec: ModelSpec, cache: ModelCache | None, modality: str = "image") -> nn.Module:
    make = build_text if modality == "text" else build
    return cache.get(spec, make, key=modality) if cache is not None else make(spec)


def describe(spec: ModelSpec, cache: ModelCache | None = None,
             modality: str = "image") -> ModelInfo:
    if modality == "text":
        return _describe_text(spec, cache)
    folder = snapshot(spec.ref)
    pre = preset(folder, spec.ref)
    weight_files(folder, spec.ref)  # a pickle-only snapshot fails before transformers loads
    tower = _tower(spec, cache)
    top = probe_outputs(tower, spec.ref, pre.size)
    summaries = [n for n in top if n != "last_hidden_state"]
    defaults = next(([n] for n in ("image_embeds", "logits", "pooled") if n in top), summaries[:1])
    names = [n for n, _ in tower.named_modules() if n]
    return ModelInfo(outputs=(*top, *names), default_outputs=tuple(defaults), preset=pre)


def _describe_text(spec: ModelSpec, cache: ModelCache | None) -> ModelInfo:
    weight_files(snapshot(spec.ref), spec.ref)  # a pickle-only snapshot fails before transformers
    encoding = text_encoding(spec)
    tower = _tower(spec, cache, "text")
    tokens = torch.zeros(1, *encoding.item_shape, dtype=torch.int64)
    tokens[:, 0] = encoding.pad_id
    tokens[:, 1] = 1
    try:
        with torch.inference_mode():
            top = list(flatten_outputs(tower(tokens)))
    except Exception as exc:
        first = first_line(exc)
        raise SpecError(f"model {spec.ref} fails on a caption: {first}") from None
    names = [n for n, _ in tower.named_modules() if n]
    return ModelInfo(outputs=(*top, *names), default_outputs=("text_embeds",),
                     preset=Preprocess())


@dataclasses.dataclass
class HFModel(TorchModel):
    """A ``TorchModel`` running the snapshot's ``ImageTower`` or ``TextTower`` (built in
    ``setup``)."""

    modality: str = "image"

    def setup(self) -> None:
        if self.prebuilt is None:
            self.prebuilt = _tower(self.spec, None, self.modality)
        super().setup()


def create(spec: ModelSpec, *, outputs: tuple[str, ...], device: str, threads: int,
           precision: str = "fp32", cache: ModelCache | None = None,
           modality: str = "image") -> HFModel:
    return HFModel(spec=spec, outputs=outputs, device=device, threads=threads,
                   precision=precision, modality=modality,
                   prebuilt=_tower(spec, cache, modality) if cache else None)
