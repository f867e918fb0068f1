"""Real webdataset shards and Parquet tables made from the test photos, and one loose-file run.

Keys are the loose files' names without ``.jpg`` (``g1/sub/coffee``), so every run can be compared
name for name with the loose-file reference. Each sample carries a caption, a url and its width
(in ``.json``), the caption again in ``.txt`` and a class number in ``.cls``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reliability"))

from faultkit import TINY, run  # noqa: E402

import gristmill  # noqa: E402

JOB = ["--shard-size", "8", "--batch-size", "4", "--workers", "1", "--loaders", "1",
       "--threads", "1", "--outputs", "output", *TINY]


def samples(root: Path, names: list[str]) -> list[dict]:
    """One dict per photo: key, bytes, caption, url, width, cls."""
    out = []
    for i, name in enumerate(names):
        data = (root / name).read_bytes()
        key = name[:-len(".jpg")]
        width = Image.open(root / name).size[0]
        out.append({"key": key, "jpg": data, "caption": f"a photo of {key} ünïcode",
                    "url": f"http://example.com/{key}.jpg", "width": width, "cls": i % 5})
    return out


@pytest.fixture(scope="session")
def photo_samples(small_tree):
    root, names = small_tree
    return samples(root, names)


@pytest.fixture(scope="session")
def wds_dir(photo_samples, tmp_path_factory) -> Path:
    """28 samples in 3 tars (10, 10, 8) written by webdataset's ShardWriter."""
    import webdataset as wds

    folder = tmp_path_factory.mktemp("wds")
    with wds.ShardWriter(str(folder / "shard-%05d.tar"), maxcount=10, verbose=0) as sink:
        for s in photo_samples:
            sink.write({"__key__": s["key"], "jpg": s["jpg"], "txt": s["caption"],
                        "cls": s["cls"],
                        "json": {"caption": s["caption"], "url": s["url"], "width": s["width"]}})
    return folder


@pytest.fixture(scope="session")
def parquet_dir(photo_samples, small_tree, tmp_path_factory) -> Path:
    """Three kinds of table over the same photos: bytes column, HF struct, path column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, names = small_tree
    folder = tmp_path_factory.mktemp("parquet")
    base = {"key": [s["key"] for s in photo_samples],
            "caption": [s["caption"] for s in photo_samples],
            "url": [s["url"] for s in photo_samples],
            "width": [s["width"] for s in photo_samples]}
    (folder / "bytes").mkdir()
    half = len(photo_samples) // 2
    for part, rows in enumerate((slice(0, half), slice(half, None))):
        table = pa.table({k: v[rows] for k, v in base.items()}
                         | {"jpg": pa.array([s["jpg"] for s in photo_samples][rows],
                                            pa.binary())})
        pq.write_table(table, folder / "bytes" / f"part-{part}.parquet", row_group_size=5)
    struct = pa.array([{"bytes": s["jpg"], "path": s["key"] + ".jpg"} for s in photo_samples],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table(base | {"image": struct}), folder / "hf.parquet", row_group_size=7)
    photos = folder / "photos"
    for name in names:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes((root / name).read_bytes())
    pq.write_table(pa.table(base | {"path": ["photos/" + n for n in names]}),
                   folder / "paths.parquet", row_group_size=10)
    return folder


@pytest.fixture(scope="session")
def loose_run(small_tree, tmp_path_factory) -> dict[str, np.ndarray]:
    """The reference: the same photos as loose files, name (without .jpg) -> features."""
    root, _ = small_tree
    out = tmp_path_factory.mktemp("loose") / "out"
    done = run(str(root), "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    return by_name(out, strip=".jpg")


def by_name(out: Path, strip: str = "") -> dict[str, np.ndarray]:
    with gristmill.open(str(out)) as result:
        names = [n[:-len(strip)] if strip and n.endswith(strip) else n for n in result.names]
        return dict(zip(names, result["output"][()], strict=True))


def assert_same_features(out: Path, reference: dict[str, np.ndarray]) -> None:
    got = by_name(out)
    assert sorted(got) == sorted(reference)
    for name, value in got.items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-6, err_msg=name)


def columns_by_name(out: Path) -> dict[str, dict[str, object]]:
    with gristmill.open(str(out)) as result:
        cols = result.columns
        return {n: {k: v[i] for k, v in cols.items()} for i, n in enumerate(result.names)}
