"""The bad-inputs catalog: every odd file is processed or recorded in ``errors`` with its reason,
and the job itself succeeds."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from faultkit import TINY, drop_file_override, run
from PIL import Image


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


def photo(w: int = 48, h: int = 40) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 5 % 256, y * 6 % 256, (x + y) * 3 % 256],
                                    axis=2).astype(np.uint8))


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    data = bytearray(jpeg(photo()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def exif_rotated() -> bytes:
    """Stored 64 wide x 32 high, left half red, right half blue, EXIF orientation 6 (rotate 90
    clockwise to view): upright it is 32 wide x 64 high, red on top, blue below."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32, 0] = 255
    stored[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(Image.fromarray(stored), exif=exif.tobytes(), quality=95)


# name -> (bytes or None for special, expected: "ok" | stage that must appear in errors | "any")
def build_catalog(root: Path) -> dict[bytes, str]:
    files: dict[str, tuple[bytes, str]] = {
        "good.jpg": (jpeg(photo()), "ok"),
        "truncated.jpg": (jpeg(photo(300, 200))[:700], "any"),
        "empty.jpg": (b"", "read"),
        "text.jpg": (b"this is not an image\n" * 10, "decode"),
        "alpha.png": (_png(photo().convert("RGBA")), "ok"),
        "grey.jpg": (jpeg(photo().convert("L")), "ok"),
        "cmyk.jpg": (jpeg(photo().convert("CMYK")), "ok"),
        "deep.png": (_png(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30)
                                          .astype(np.uint16))), "ok"),
        "palette.gif": (_gif(photo().convert("P")), "ok"),
        "rotated.jpg": (exif_rotated(), "ok"),
        "bomb.png": (png_header_only(100_000, 100_000), "decode"),
        "bomb.jpg": (jpeg_claiming(60_000, 60_000), "decode"),
        "large.jpg": (jpeg(photo(1100, 1000)), "decode"),  # over --max-image-pixels 1e6
        "unreadable.jpg": (jpeg(photo()), "read"),
        "with space.jpg": (jpeg(photo()), "ok"),
        "café.jpg": (jpeg(photo()), "ok"),
        "x.jpg/inner.jpg": (jpeg(photo()), "ok"),  # a folder named like an image
    }
    expected = {}
    for name, (data, want) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[name.encode()] = want
    (root / "unreadable.jpg").chmod(0)
    with open(os.path.join(os.fsencode(root), b"bad-\xff\xfe.jpg"), "wb") as f:
        f.write(jpeg(photo()))
    expected[b"bad-\xff\xfe.jpg"] = "ok"
    os.symlink(root / "nowhere.jpg", root / "broken.jpg")
    os.symlink(root / "loop-b.jpg", root / "loop-a.jpg")
    os.symlink(root / "loop-a.jpg", root / "loop-b.jpg")
    expected.update({b"broken.jpg": "read", b"loop-a.jpg": "read", b"loop-b.jpg": "read"})
    return expected


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _gif(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "GIF")
    return buf.getvalue()


@pytest.mark.slow
def test_catalog_job_records_every_bad_input(tmp_path):
    root = tmp_path / "in"
    expected = build_catalog(root)
    # a file that disappears between listing and reading: a list file names it, nobody writes it
    listed = tmp_path / "list.txt"
    (tmp_path / "gone").mkdir()
    listed.write_text(str(tmp_path / "gone" / "vanished.jpg") + "\n")
    out = tmp_path / "out"
    done = run(str(root), str(listed), "-o", str(out), "--max-image-pixels", "1000000",
               "--batch-size", "4", "--workers", "1", "--loaders", "1", *TINY,
               preexec_fn=drop_file_override)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    with h5py.File(out / "features.h5", "r") as f:
        names = [n.decode() for n in f["names"][()]]
        errors = {r[0].decode(): (r[1].decode(), r[2].decode()) for r in f["errors"][()]}
        feats = f["output"][()]
    assert np.isfinite(feats).all() and len(feats) == len(names)
    assert not set(names) & set(errors), "an input is both a result and an error"
    want = {"in/" + n.decode("utf-8", "backslashreplace"): w for n, w in expected.items()}
    want["gone/vanished.jpg"] = "read"
    assert sorted([*names, *errors]) == sorted(want)
    for name, outcome in want.items():
        if outcome == "ok":
            assert name in names, (name, errors.get(name))
        elif outcome != "any":
            assert name in errors, name
            assert errors[name][0] == outcome and errors[name][1], (name, errors[name])
    assert "too large" in errors["in/bomb.png"][1] and "too large" in errors["in/large.jpg"][1]
    assert "ermission" in errors["in/unreadable.jpg"][1]
    assert "symbolic links" in errors["in/loop-a.jpg"][1]
    assert "in/bad-\\xff\\xfe.jpg" in names


def test_exif_orientation_is_applied(tmp_path):
    from gristmill.spec import Preprocess
    from gristmill.transforms import decode

    pre = Preprocess(resize=(16, 16)).complete()
    rgb = decode(exif_rotated(), pre, 10**8).astype(int)
    h, w = rgb.shape[:2]
    assert h == 2 * w, rgb.shape
    top, bottom = rgb[: h // 2 - 2], rgb[h // 2 + 2:]
    assert top[..., 0].mean() > 200 and top[..., 2].mean() < 50
    assert bottom[..., 2].mean() > 200 and bottom[..., 0].mean() < 50
