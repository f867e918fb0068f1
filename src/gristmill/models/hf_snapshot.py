"""Reading a Hugging Face snapshot for ``--model hf:PATH`` (see ``hf``): where it is, its weights,
its preprocessing and the ``transformers`` model built over them.

Nothing is downloaded unless ``GRISTMILL_HF_DOWNLOAD=1`` is set (and the machine is online): a model
id missing from the cache is a one-line error. Weights must be safetensors (``model.safetensors``
or its sharded index); a snapshot with only ``pytorch_model.bin`` (a pickle) is refused unread.
The weights are mapped (``weightfile.map_tensors``) into a model built without initialising its
parameters, so the CPU workers of a machine share the snapshot's pages in the page cache.

Preprocessing comes from the snapshot's ``preprocessor_config.json`` (``preset``): size, centre
crop, mean/std (after the processor's rescale), resampling (bicubic for CLIP), so gristmill's rows
match what ``transformers``' own image processor makes; the usual flags override it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from torch import nn

from ..errors import SpecError, first_line
from ..spec import Preprocess
from . import HF_PREFIX, weightfile

log = logging.getLogger(__name__)

DOWNLOAD_ENV = "GRISTMILL_HF_DOWNLOAD"
_FILTERS = {2: "bilinear", 3: "bicubic"}  # PIL's numbering, as the processor configs use it
_SHORTEST_EDGE_INT = ("CLIP", "Bit", "Chinese")  # processors whose plain int size is the short side


def snapshot(ref: str) -> str:
    """The snapshot folder ``hf:PATH`` names: the folder itself, or the cached snapshot of a model
    id (downloaded only when ``GRISTMILL_HF_DOWNLOAD=1``)."""
    target = ref[len(HF_PREFIX):]
    if os.path.isdir(target):
        return os.path.abspath(target)
    if not target or target.startswith((".", "/")) or target.count("/") > 1:
        raise SpecError(f"model {ref}: no snapshot folder {target!r}")
    allowed = os.environ.get(DOWNLOAD_ENV) == "1"
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(target, local_files_only=not allowed)
    except Exception as exc:
        why = "it is not in the local Hugging Face cache (gristmill downloads nothing unless " \
              f"{DOWNLOAD_ENV}=1)" if not allowed else str(exc).splitlines()[0]
        raise SpecError(f"model {ref}: not a folder, and {why}") from None


def read_json(path: str, ref: str) -> dict[str, Any]:
    """A JSON file of the snapshot; SpecError naming it when missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SpecError(f"model {ref}: the snapshot has no {os.path.basename(path)}") from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"model {ref}: cannot read {os.path.basename(path)}: {exc}") from None


def weight_files(folder: str, ref: str) -> list[str]:
    """The snapshot's safetensors files, each checked (a pickle is refused unread)."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        shards = sorted(set(read_json(index, ref).get("weight_map", {}).values()))
        files = [os.path.join(folder, name) for name in shards]
    elif any(os.path.isfile(os.path.join(folder, n)) for n in ("pytorch_model.bin",
                                                               "pytorch_model.bin.index.json")):
        raise SpecError(f"model {ref}: the snapshot has only pickle weights (pytorch_model.bin); "
                        "gristmill loads safetensors only (save it with safe_serialization=True)")
    else:
        raise SpecError(f"model {ref}: the snapshot has no model.safetensors")
    for path in files:
        weightfile.require_safetensors(path)
    return files


def preset(folder: str, ref: str) -> Preprocess:
    """gristmill's preprocessing equal to the snapshot's image processor config."""
    cfg = read_json(os.path.join(folder, "preprocessor_config.json"), ref)
    kind = str(cfg.get("image_processor_type", ""))
    resize: int | tuple[int, int] | None = None
    if cfg.get("do_resize", True):
        size = cfg.get("size", 224)
        if isinstance(size, dict) and "shortest_edge" in size:
            resize = int(size["shortest_edge"])
        elif isinstance(size, dict) and "height" in size and "width" in size:
            resize = (int(size["height"]), int(size["width"]))
        elif isinstance(size, int):
            resize = size if kind.startswith(_SHORTEST_EDGE_INT) else (size, size)
        else:
            raise SpecError(f"model {ref}: unsupported image processor size {size!r}")
    crop = None
    if cfg.get("do_center_crop", False):
        c = cfg.get("crop_size", resize)
        crop = (int(c["height"]), int(c["width"])) if isinstance(c, dict) else (int(c), int(c))
    if resize is None and crop is None:
        raise SpecError(f"model {ref}: the image processor neither resizes nor crops; "
                        "give --resize HxW")
    resample = _FILTERS.get(int(cfg.get("resample", 2)))
    if resample is None:
        log.warning("model %s: resample filter %s is not offered; using bicubic", ref,
                    cfg.get("resample"))
        resample = "bicubic"
    scale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if cfg.get("do_normalize", True):
        mean = tuple(float(m) / scale for m in _three(cfg.get("image_mean", 0.5)))
        std = tuple(float(s) / scale for s in _three(cfg.get("image_std", 0.5)))
    elif scale != 1.0:
        std = (1.0 / scale,) * 3
    return Preprocess(resize=resize, crop=crop, mean=mean, std=std, channel_order="RGB",
                      layout="NCHW", resample=resample)


def _three(value: Any) -> list[float]:
    return list(value) if isinstance(value, list | tuple) else [value] * 3


def load_model(folder: str, ref: str) -> nn.Module:
    """The snapshot's ``transformers`` model, eval mode, its weights mapped from the snapshot."""
    import transformers

    config = read_json(os.path.join(folder, "config.json"), ref)
    files = weight_files(folder, ref)
    try:
        auto = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise SpecError(f"model {ref}: transformers cannot read its config: "
                        f"{first_line(exc)}") from None
    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = transformers.AutoModel._model_mapping.get(type(auto))
    if cls is None:
        raise SpecError(f"model {ref}: transformers has no model class for "
                        f"{arch or auto.model_type}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(weightfile.map_tensors(path))
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every parameter is replaced by a mapped tensor below
        model = cls(auto)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys:  # renamed keys (older checkpoints): transformers' own loader maps them
        log.info("model %s: %d keys not in the snapshot by name; loading with transformers",
                 ref, len(result.missing_keys))
        model = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return model.eval()
