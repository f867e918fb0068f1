"""``--modality image+text``: both towers of a tiny random CLIP snapshot (built by ``transformers``,
hf_snapshots.py) on image-caption pairs from a Parquet table and from tars, in one pass.

The images are 96x96 PNGs, the snapshot's own input size, so neither side resamples: the image
embeddings agree with ``transformers``' to float rounding, and so must ``clip_score`` (100 x the
cosine of the reference embeddings) and each row's ``text_embeds`` (its own caption, cosine >=
0.9999).
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gristmill
from gristmill.errors import SpecError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))

pytestmark = pytest.mark.slow
RUN = dict(shard_size=4, batch_size=3, workers=1, threads=1, loaders=1, device="cpu",
           progress=False, modality="image+text")
CAPTIONS = ["a photo of a cat", "two dogs running on the grass", "a red car",
            "a small bird in the sky with one big tree and two birds and black water on the road",
            "the old house", "green tree, blue sky", "a dog and a cat"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from hf_snapshots import build

    return build("clip", tmp_path_factory.mktemp("pairs-clip") / "clip")


def pngs() -> list[bytes]:
    rng = np.random.default_rng(5)
    out = []
    for _ in CAPTIONS:
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((96, 96), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def reference(folder: Path, images: list[bytes], texts: list[str]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    import transformers as tf

    processor = tf.AutoImageProcessor.from_pretrained(str(folder))
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModel.from_pretrained(str(folder)).eval()
    pixels = processor(images=[Image.open(io.BytesIO(b)).convert("RGB") for b in images],
                       return_tensors="pt")["pixel_values"]
    tokens = tok(texts, padding="max_length", truncation=True,
                 max_length=model.config.text_config.max_position_embeddings,
                 return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
        text = model.get_text_features(**tokens).pooler_output.numpy()
    return image, text


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check(out: Path, keys: list[str], images: list[bytes], clip: Path) -> dict[str, str]:
    ref_image, ref_text = reference(clip, images, CAPTIONS)
    with gristmill.open(str(out)) as result:
        row = {n: i for i, n in enumerate(result.names)}
        assert sorted(result.outputs) == ["clip_score", "image_embeds", "text_embeds"]
        order = [row[k] for k in keys]
        image, text = result["image_embeds"][:][order], result["text_embeds"][:][order]
        score = np.asarray(result["clip_score"][:])[order].reshape(-1)
        errors = {e[0]: e[2] for e in result.errors}
    assert cosine(text, ref_text).min() >= 0.9999
    assert cosine(image, ref_image).min() >= 0.9999
    np.testing.assert_allclose(score, 100 * cosine(ref_image, ref_text), atol=2e-3, rtol=0)
    return errors


def test_parquet_pairs_match_transformers(clip, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = pngs()
    keys = [f"s{i}" for i in range(len(CAPTIONS))]
    table = pa.table({"key": [*keys, "nocap", "noimg"], "jpg": [*images, images[0], None],
                      "caption": [*CAPTIONS, None, "a cat"]})
    pq.write_table(table, tmp_path / "pairs.parquet", row_group_size=4)
    out = tmp_path / "out"
    gristmill.run([str(tmp_path / "pairs.parquet")], str(out), model=f"hf:{clip}", **RUN)
    errors = check(out, keys, images, clip)
    assert set(errors) == {"nocap", "noimg"}
    assert "caption" in errors["nocap"] and "'jpg' is null" in errors["noimg"]


def test_tar_pairs_txt_and_json_captions(clip, tmp_path) -> None:
    import json

    images = pngs()
    keys = [f"{i:05d}" for i in range(len(CAPTIONS))]
    for field, name in (("txt", "a.tar"), ("json", "b.tar")):
        with tarfile.open(tmp_path / name, "w") as tar:
            members = [(f"{k}.png", img) for k, img in zip(keys, images, strict=True)]
            members += [(f"{k}.{field}", (c if field == "txt" else json.dumps({"text": c}))
                         .encode()) for k, c in zip(keys, CAPTIONS, strict=True)]
            members.append(("99999.png", images[0]))  # a sample without its caption
            for member, data in sorted(members):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        out = tmp_path / f"out-{field}"
        gristmill.run([str(tmp_path / name)], str(out), model=f"hf:{clip}",
                      **({"text_column": "text"} if field == "json" else {}), **RUN)
        errors = check(out, keys, images, clip)
        assert list(errors) == ["99999"] and "caption" in errors["99999"]


def test_image_text_needs_a_text_tower_and_pairs(clip, tmp_path) -> None:
    (tmp_path / "p").mkdir()
    Image.new("RGB", (96, 96)).save(tmp_path / "p" / "a.png")
    with pytest.raises(SpecError, match="has no text tower"):
        gristmill.run([str(tmp_path / "p")], str(tmp_path / "o"),
                      model="models_for_tests:tiny_cnn", **RUN)
    with pytest.raises(SpecError, match="not loose files"):
        gristmill.run([str(tmp_path / "p")], str(tmp_path / "o"), model=f"hf:{clip}", **RUN)
    assert not (tmp_path / "o").exists()


def test_pairs_beside_other_models_and_a_head(clip, tmp_path) -> None:
    """The curation pass: CLIP's two towers (with clip_score), another image model and a head
    on CLIP's image embedding, from one decode per sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from multi_models import score

    images = pngs()
    keys = [f"s{i}" for i in range(len(CAPTIONS))]
    pq.write_table(pa.table({"key": keys, "jpg": images, "caption": CAPTIONS}),
                   tmp_path / "pairs.parquet", row_group_size=4)
    out = tmp_path / "out"
    gristmill.run([str(tmp_path / "pairs.parquet")], str(out), models={
        "clip": f"hf:{clip}", "tiny": "models_for_tests:tiny_cnn",
        "aes": "multi_models:Score@clip/image_embeds"}, format="npy", **RUN)
    ref_image, ref_text = reference(clip, images, CAPTIONS)
    with gristmill.open(str(out)) as result:
        assert sorted(result.outputs) == [
            "aes/name_length", "aes/score", "clip/clip_score", "clip/image_embeds",
            "clip/text_embeds", "tiny/output"]
        order = [{n: i for i, n in enumerate(result.names)}[k] for k in keys]
        image = np.asarray(result["clip/image_embeds"])[order]
        text = np.asarray(result["clip/text_embeds"])[order]
        clip_score = np.asarray(result["clip/clip_score"]).reshape(-1)[order]
        aes = np.asarray(result["aes/score"])[order]
    assert cosine(text, ref_text).min() >= 0.9999
    assert cosine(image, ref_image).min() >= 0.9999
    np.testing.assert_allclose(clip_score, 100 * cosine(ref_image, ref_text), atol=2e-3, rtol=0)
    np.testing.assert_allclose(aes, score(image), atol=1e-4, rtol=1e-5)
    with pytest.raises(SpecError, match="no model has a text tower"):
        gristmill.run([str(tmp_path / "pairs.parquet")], str(tmp_path / "o2"),
                      models={"tiny": "models_for_tests:tiny_cnn"}, **RUN)
