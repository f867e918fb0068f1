"""Tiny Hugging Face snapshots made by ``transformers`` itself (random initialisation, no download).

Each kind is a real model class of a couple of layers, saved with ``save_pretrained`` (safetensors)
next to an image processor config written by the processor class the real checkpoints use, at a
96-pixel input so the tests stay fast.

The dual encoders (CLIP, SigLIP) also get a tokenizer, built offline with a tiny vocabulary and
16 text positions (so long captions are truncated): CLIP's own ``CLIPTokenizer`` (byte-level BPE:
every byte, with and without the end-of-word mark, and a few merges); for SigLIP, whose
``SiglipTokenizer`` needs a SentencePiece model (and the ``sentencepiece`` package), a
``tokenizers`` word-level tokenizer with SigLIP's conventions instead: lower case, ``</s>``
appended, padding with ``</s>``, and no attention mask in ``model_input_names`` (so the model gets
token ids alone, as SigLIP was trained).
"""

from __future__ import annotations

from pathlib import Path

SIZE = 96
TINY = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4}


def _vision(**extra: object) -> dict:
    return TINY | {"image_size": SIZE, "patch_size": 16} | extra


TEXT_POSITIONS = 16
WORDS = ("a", "photo", "of", "the", "and", "on", "in", "with", "to", "at", "one", "two", "cat",
         "dog", "dogs", "bird", "birds", "car", "tree", "house", "red", "green", "blue", "black",
         "small", "big", "old", "running", "sitting", "grass", "road", "sky", "water")


def clip_tokenizer() -> object:
    """``CLIPTokenizer`` over every byte (and its end-of-word form) plus a few merges."""
    import transformers as tf
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate([*alphabet, *(c + "</w>" for c in alphabet)])}
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"),
              ("th", "e</w>"), ("o", "f</w>"), ("r", "e"), ("re", "d</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return tf.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def siglip_tokenizer() -> object:
    """A ``tokenizers`` word-level tokenizer with SigLIP's conventions (see module docstring)."""
    import transformers as tf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                           special_tokens=[("</s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>",
                                      pad_token="</s>", unk_token="<unk>", model_max_length=64,
                                      model_input_names=["input_ids"])


def build(kind: str, folder: Path) -> Path:
    """Write snapshot ``kind`` (clip, siglip, dinov2, vit) into ``folder``; returns it."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = None
    if kind == "clip":
        tokenizer = clip_tokenizer()
        text = TINY | {"vocab_size": len(tokenizer), "max_position_embeddings": TEXT_POSITIONS,
                       "bos_token_id": tokenizer.bos_token_id,
                       "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id}
        config = tf.CLIPConfig(text_config=text, vision_config=_vision(), projection_dim=24)
        model = tf.CLIPModel(config)
        processor = tf.CLIPImageProcessorPil(size={"shortest_edge": SIZE},
                                             crop_size={"height": SIZE, "width": SIZE})
    elif kind == "siglip":
        tokenizer = siglip_tokenizer()
        config = tf.SiglipConfig(text_config=TINY | {"vocab_size": len(tokenizer),
                                                     "max_position_embeddings": TEXT_POSITIONS,
                                                     "pad_token_id": tokenizer.pad_token_id,
                                                     "eos_token_id": tokenizer.eos_token_id,
                                                     "bos_token_id": None},
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
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder
