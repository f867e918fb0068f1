"""``--model hf:PATH``: tiny snapshots built by ``transformers`` itself, run through gristmill on
the test photos, compared with ``transformers``' own image processor + forward.

Two comparisons, because two things could differ:

- the model: gristmill's module fed the processor's own ``pixel_values`` must give the
  ``transformers`` outputs exactly (<= 1e-5 relative);
- the whole job: gristmill decodes JPEGs at a reduced DCT scale (1/2 .. 1/8, whatever still covers
  the target, see transforms.py) and resamples only the cropped box, with the snapshot's filter
  (bicubic for CLIP), where the processor decodes in full with Pillow, resizes the whole image
  (long side truncated, not rounded) and then crops. Pixels then differ by a few grey levels at
  edges (measured: mean 0.01-0.04, max ~2 in normalised units), which moves an embedding by ~1 %
  (median) and at most ~12 % (a random-init 2-layer model is more sensitive to pixels than a
  trained one). Bound: median <= 4 %, max <= 15 %, and every image's error under half the median
  distance between two different images' embeddings, so a wrong crop, filter, mean, std or channel
  order (each moves embeddings by tens of %) fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from jobhelp import cli
from PIL import Image

import gristmill
from gristmill import models
from gristmill.errors import SpecError
from gristmill.spec import ModelSpec

pytestmark = pytest.mark.slow
RUN = dict(shard_size=16, batch_size=8, workers=1, threads=1, loaders=1, device="cpu",
           progress=False)
MAIN = {"clip": "image_embeds", "siglip": "image_embeds", "dinov2": "pooled", "vit": "logits"}


def reference(kind: str, folder: Path, root: Path, names: list[str]) -> tuple[torch.Tensor,
                                                                              np.ndarray]:
    """transformers' processor on the photos, and its model's main output for them."""
    import transformers as tf

    processor = tf.AutoImageProcessor.from_pretrained(str(folder))
    pixels = processor(images=[Image.open(root / n).convert("RGB") for n in names],
                       return_tensors="pt")["pixel_values"]
    cls = tf.ViTForImageClassification if kind == "vit" else tf.AutoModel
    model = cls.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        if kind in ("clip", "siglip"):
            out = model.get_image_features(pixel_values=pixels).pooler_output
        elif kind == "dinov2":
            out = model(pixel_values=pixels).pooler_output
        else:
            out = model(pixel_values=pixels).logits
    return pixels, out.numpy()


@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2", "vit"])
def test_snapshot_matches_transformers(kind, snapshots, small_tree, tmp_path) -> None:
    root, _ = small_tree
    folder = snapshots[kind]
    spec = ModelSpec(ref=f"hf:{folder}")
    out = tmp_path / "out"
    gristmill.run([str(root)], str(out), model=spec, **RUN)
    with gristmill.open(str(out)) as result:
        names, ours = result.names, result[MAIN[kind]][:]
    pixels, theirs = reference(kind, folder, root, names)

    model = models.create(spec, outputs=(MAIN[kind],), device="cpu", threads=1)
    model.setup()
    same_input = model.predict(np.ascontiguousarray(pixels.numpy()))[MAIN[kind]]
    np.testing.assert_allclose(same_input, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())

    error = np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    apart = np.linalg.norm(theirs[:, None] - theirs[None], axis=2) / np.linalg.norm(
        theirs, axis=1)[:, None]
    between = np.median(apart[~np.eye(len(theirs), dtype=bool)])
    assert np.median(error) <= 0.04 and error.max() <= 0.15, (np.median(error), error.max())
    assert error.max() < 0.5 * between, (error.max(), between)


def test_outputs_by_name_and_normalize(snapshots, small_tree, tmp_path) -> None:
    root, _ = small_tree
    out = tmp_path / "out"
    done = cli("run", str(root), "-o", str(out), "--model", f"hf:{snapshots['clip']}",
               "--outputs", "image_embeds,pooled,cls_token,patch_mean,vision_model.encoder",
               "--normalize", "--shard-size", "16", "--batch-size", "8", "--workers", "1",
               "--threads", "1", "--loaders", "1", "--device", "cpu", "--no-progress")
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        embeds, pooled = result["image_embeds"][:], result["pooled"][:]
        assert result["cls_token"].shape == (28, 32) and result["patch_mean"].shape == (28, 32)
        assert result["vision_model.encoder"].shape == (28, 37, 32)  # 36 patches + class token
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, rtol=1e-5)
    assert embeds.shape == (28, 24) and pooled.shape == (28, 32)


def test_pickle_weights_and_missing_ids_are_refused_in_one_line(snapshots, small_tree,
                                                                tmp_path, monkeypatch) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(snapshots["vit"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.ones(1)}, folder / "pytorch_model.bin")
    root, _ = small_tree
    done = cli("run", str(root), "-o", str(tmp_path / "o"), "--model", f"hf:{folder}")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "only pickle weights (pytorch_model.bin)" in done.stderr
    (folder / "model.safetensors").write_bytes((folder / "pytorch_model.bin").read_bytes())
    with pytest.raises(SpecError, match="is a pickle, not safetensors"):
        models.describe(ModelSpec(ref=f"hf:{folder}"))

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(SpecError, match="not in the local Hugging Face cache"):
        models.describe(ModelSpec(ref="hf:someone/not-cached"))


def test_a_model_id_from_the_local_cache(snapshots, tmp_path, monkeypatch) -> None:
    """The layout huggingface_hub keeps: models--ORG--NAME/{refs/main, snapshots/REVISION/}."""
    cache = tmp_path / "cache"
    repo = cache / "models--tiny--dinov2"
    revision = "0" * 40
    shutil.copytree(snapshots["dinov2"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    info = models.describe(ModelSpec(ref="hf:tiny/dinov2"))
    assert info.default_outputs == ("pooled",) and info.preset.resize == 110
    config = json.loads((snapshots["dinov2"] / "preprocessor_config.json").read_text())
    assert info.preset.crop == (config["crop_size"]["height"], config["crop_size"]["width"])
