"""``--modality text``: captions through the text towers of tiny CLIP and SigLIP snapshots (built
by ``transformers``, see hf_snapshots.py), compared with ``transformers``' own tokenizer (padding
to the text config's ``max_position_embeddings``, truncating) + ``get_text_features``.

Tokenization is exact (the same ids), so the embeddings differ only by float summation order
between a batch of gristmill's and the reference's: bound 1e-4 relative per caption.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from jobhelp import cli

import gristmill
from gristmill import models
from gristmill.errors import SpecError
from gristmill.job import resolve
from gristmill.sources import list_inputs
from gristmill.spec import JobSpec, ModelSpec, Preprocess

pytestmark = pytest.mark.slow  # the snapshots are built by transformers (seconds)
RUN = dict(shard_size=4, batch_size=3, workers=1, threads=1, loaders=1, device="cpu",
           progress=False, modality="text")
CAPTIONS = [
    "a photo of a cat",
    "Two dogs running on the grass",
    # longer than the 16 text positions: truncated as the tokenizer truncates
    "a small red car on the road at the old house with one big tree and two birds in the sky "
    "and black water",
    "Ünïcode ☃ caption — with dashes",
    "a bird",
    "green tree, blue sky",
    "the dog and the cat sitting",
]


def reference(folder: Path, texts: list[str]) -> np.ndarray:
    """transformers: the snapshot's tokenizer (max_length padding, truncation) + text features."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModel.from_pretrained(str(folder)).eval()
    length = model.config.text_config.max_position_embeddings
    inputs = tok(texts, padding="max_length", truncation=True, max_length=length,
                 return_tensors="pt")
    with torch.no_grad():
        return model.get_text_features(**inputs).pooler_output.numpy()


def relative(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)


def write_captions(path: Path) -> dict[str, str]:
    """CAPTIONS as a text file with blank lines, a CRLF ending and one line that is not UTF-8;
    returns line number -> caption for the good lines."""
    lines = [CAPTIONS[0], "", CAPTIONS[1] + "\r", CAPTIONS[2], "   ", "\xff", CAPTIONS[3],
             *CAPTIONS[4:], ""]
    data = b"\n".join(line.encode("latin-1") if line == "\xff" else line.encode()
                      for line in lines)
    path.write_bytes(data)
    return {str(i + 1): line.rstrip("\r") for i, line in enumerate(lines)
            if line.strip() and line != "\xff"}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_text_file_matches_transformers(kind, snapshots, tmp_path) -> None:
    folder = snapshots[kind]
    expected = write_captions(tmp_path / "captions.txt")
    out = tmp_path / "out"
    report = gristmill.run([str(tmp_path / "captions.txt")], str(out), model=f"hf:{folder}",
                           outputs=["text_embeds", "pooled"], format="parquet", **RUN)
    assert report.items == len(expected) + 1 and report.errors == 1
    with gristmill.open(str(out)) as result:
        names, ours = list(result.names), result["text_embeds"][:]
        assert result["pooled"].shape == (len(expected), 32)
        errors = [tuple(e) for e in result.errors]
    assert names == list(expected)  # line order, named by line number (blank lines skipped)
    assert [e[0] for e in errors] == ["6"] and errors[0][1] == "decode"
    error = relative(ours, reference(folder, list(expected.values())))
    assert error.max() <= 1e-4, error


def test_parquet_text_column_normalized_resumed_and_appended(snapshots, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = snapshots["siglip"]
    keys = [f"k{i:02d}" for i in range(len(CAPTIONS) + 1)]
    captions = [*CAPTIONS[:3], None, *CAPTIONS[3:]]  # a null caption is an error row
    pq.write_table(pa.table({"key": keys, "caption": captions, "alt": captions,
                             "source": [f"s{i}" for i in range(len(keys))]}),
                   tmp_path / "captions.parquet", row_group_size=3)
    out = tmp_path / "out"
    args = ("run", str(tmp_path / "captions.parquet"), "-o", str(out), "--model", f"hf:{folder}",
            "--modality", "text", "--text-column", "alt", "--keep-columns", "source",
            "--normalize", "--shard-size", "4", "--batch-size", "3", "--workers", "1",
            "--threads", "1", "--loaders", "1", "--device", "cpu", "--no-progress")
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    with gristmill.open(str(out)) as result:
        names, ours = list(result.names), result["text_embeds"][:]
        assert list(result.columns["source"]) == [f"s{keys.index(n)}" for n in names]
        errors = [tuple(e) for e in result.errors]
    good = [(k, c) for k, c in zip(keys, captions, strict=True) if c is not None]
    assert names == [k for k, _ in good] and errors[0][:2] == ("k03", "read")
    theirs = reference(folder, [c for _, c in good])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert relative(ours, theirs).max() <= 1e-4

    # resume: a lost shard is computed again, the others are kept
    shards = sorted(p for p in (out / "shards").iterdir() if p.name.endswith(".json"))
    assert len(shards) == 3  # row groups of 3 rows are never cut: shards of 3, 3 and 2 rows
    shards[0].unlink()
    report = gristmill.run([str(tmp_path / "captions.parquet")], str(out),
                           model=ModelSpec(ref=f"hf:{folder}", normalize=True),
                           text_column="alt", keep_columns=("source",), **RUN)
    assert report.shards_skipped == 2 and report.ok == 3
    with gristmill.open(str(out)) as result:
        assert list(result.names) == names
        np.testing.assert_allclose(result["text_embeds"][:], ours, rtol=1e-6, atol=1e-7)


def test_appended_lines_get_new_shards(snapshots, tmp_path) -> None:
    folder = snapshots["clip"]
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS[:4]) + "\n")
    out = tmp_path / "out"
    gristmill.run([str(path)], str(out), model=f"hf:{folder}", **RUN)
    with path.open("a") as f:
        f.write("\n".join(CAPTIONS[4:]) + "\n")
    report = gristmill.run([str(path)], str(out), model=f"hf:{folder}", append=True, **RUN)
    assert report.shards_skipped == 1
    with gristmill.open(str(out)) as result:
        names, ours = list(result.names), result["text_embeds"][:]
    assert names == [str(i + 1) for i in range(len(CAPTIONS))]
    assert relative(ours, reference(folder, CAPTIONS)).max() <= 1e-4


def test_bad_text_options_are_one_line(snapshots, small_tree, tmp_path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\n")
    clip = f"hf:{snapshots['clip']}"

    def check(message: str, **fields) -> None:
        spec = JobSpec(sources=(str(captions),), out=str(tmp_path / "o"),
                       model=ModelSpec(ref=fields.pop("model", clip)), device="cpu",
                       **({"modality": "text"} | fields))
        with pytest.raises(SpecError, match=message) as caught:
            resolve(spec)
        assert "\n" not in str(caught.value)

    check("has no text tower", model=f"hf:{snapshots['dinov2']}")
    check("--text-column reads captions: give --modality text", modality="image",
          text_column="caption")
    check("--resize is image preprocessing", preprocess=Preprocess(resize=224))
    check("--image-column reads images", image_column="jpg")
    check("--modality must be image, text or image.text", modality="audio")
    spec = JobSpec(sources=(str(captions),), out="o", modality="text", text_column="caption")
    with pytest.raises(SpecError, match="--text-column needs Parquet sources"):
        list_inputs(spec.sources, spec.source_options())
    root, _ = small_tree
    with pytest.raises(SpecError, match="is a folder; --modality text reads text files"):
        list_inputs([str(root)], {"modality": "text"})

    done = cli("run", str(captions), "-o", str(tmp_path / "o"), "--model",
               f"hf:{snapshots['vit']}", "--modality", "text")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "has no text tower" in done.stderr
    assert not os.path.exists(tmp_path / "o")


def test_text_encoding_matches_the_tokenizer(snapshots) -> None:
    """The loaders' tokenizers-only path gives transformers' ids and mask exactly."""
    import transformers as tf

    for kind in ("clip", "siglip"):
        spec = ModelSpec(ref=f"hf:{snapshots[kind]}")
        encoding = models.text_encoding(spec)
        assert encoding.tokenizer_json and encoding.length == 16
        ids, mask = encoding.tokenizer()(CAPTIONS)
        tok = tf.AutoTokenizer.from_pretrained(str(snapshots[kind]))
        theirs = tok(CAPTIONS, padding="max_length", truncation=True, max_length=16,
                     return_attention_mask=True, return_tensors="np")
        np.testing.assert_array_equal(ids, theirs["input_ids"])
        np.testing.assert_array_equal(mask, theirs["attention_mask"])
        assert (mask.sum(axis=1) == 16).any()  # the long caption was truncated


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_a_text_tower_holds_no_image_weights(kind, snapshots) -> None:
    from gristmill.models.hf import build_text

    tower = build_text(ModelSpec(ref=f"hf:{snapshots[kind]}"))
    names = [name for name, _ in tower.model.named_parameters()]
    assert names and all(name.split(".")[0].startswith(("text", "logit")) for name in names), names
    assert not any("vision" in name or "visual" in name for name in names)
