"""Tiny Hugging Face snapshots made by ``transformers`` itself (random initialisation, no download).

Each kind is a real model class of a couple of layers, saved with ``save_pretrained`` (safetensors)
next to an image processor config written by the processor class the real checkpoints use, at a
96-pixel input so the tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 96
TINY = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4}


def _vision(**extra: object) -> dict:
    return TINY | {"image_size": SIZE, "patch_size": 16} | extra


def build(kind: str, folder: Path) -> Path:
    """Write snapshot ``kind`` (clip, siglip, dinov2, vit) into ``folder``; returns it."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "clip":
        config = tf.CLIPConfig(text_config=TINY | {"vocab_size": 99, "max_position_embeddings": 16},
                               vision_config=_vision(), projection_dim=24)
        model = tf.CLIPModel(config)
        processor = tf.CLIPImageProcessorPil(size={"shortest_edge": SIZE},
                                             crop_size={"height": SIZE, "width": SIZE})
    elif kind == "siglip":
        config = tf.SiglipConfig(text_config=TINY | {"vocab_size": 99,
                                                     "max_position_embeddings": 16},
                                 vision_config=_vision())
        model = tf.SiglipModel(config)
        processor = tf.SiglipImageProcessorPil(size={"height": SIZE, "width": SIZE})
    elif kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**_vision(mlp_ratio=2)))
        processor = tf.BitImageProcessorPil(size={"shortest_edge": 110},
                                            crop_size={"height": SIZE, "width": SIZE},
                                            image_mean=[0.485, 0.456, 0.406],
                                            image_std=[0.229, 0.224, 0.225])
    elif kind == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(**_vision(), num_labels=5))
        processor = tf.ViTImageProcessorPil(size={"height": SIZE, "width": SIZE})
    else:
        raise ValueError(kind)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    return folder
