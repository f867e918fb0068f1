"""Augmentation in one process: crop boxes, determinism, reduced decode, other formats, hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gristmill.loader.augment import Augment, TrainFill
from gristmill.loader.messages import BatchTask
from gristmill.loader.order import task_seed
from gristmill.spec import Preprocess
from gristmill.transforms import ItemError

PRE = Preprocess(resize=(32, 32), crop=(32, 32)).complete()


def fill(path: Path, augment: Augment | None, *, index: int = 3, epoch: int = 0) -> np.ndarray:
    row = np.zeros((3, 32, 32), np.uint8)
    task = BatchTask((0, 0), (bytes(path),), seed=task_seed(1, epoch), indices=(index,))
    TrainFill(PRE, augment, 10**8)(bytes(path), row, task, 0)
    return row


@pytest.mark.parametrize(("h", "w"), [(100, 100), (50, 400), (400, 50), (3, 3)])
def test_boxes_stay_inside_the_image(h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, ch, cw = Augment().box(h, w, rng)
        assert min(top, left) >= 0 and min(ch, cw) > 0
        assert top + ch <= h and left + cw <= w
    assert Augment(crop=False).box(h, w, rng) == (0, 0, h, w)


def test_same_sample_same_pixels_other_epoch_other_pixels(labeled: Path) -> None:
    path = labeled / "coffee" / "0.jpg"
    aug = Augment(scale=(0.1, 0.5))
    a, b = fill(path, aug), fill(path, aug)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, fill(path, aug, epoch=1))
    assert not np.array_equal(a, fill(path, aug, index=4))


def test_reduced_decode_matches_a_full_decode(tmp_path: Path, labeled: Path) -> None:
    big = Image.open(labeled / "rocket" / "0.jpg").resize((960, 960))
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")  # PNG: always decoded in full
    aug = Augment(scale=(0.6, 1.0), flip=0.0)
    jpeg, png = fill(tmp_path / "big.jpg", aug), fill(tmp_path / "big.png", aug)
    assert np.abs(jpeg.astype(int) - png.astype(int)).mean() < 6  # resampling noise only


def test_hook_flip_and_eval_mode(labeled: Path) -> None:
    path = labeled / "chelsea" / "1.jpg"
    plain = fill(path, Augment(crop=False, flip=0.0))
    flipped = fill(path, Augment(crop=False, flip=1.0))
    assert np.array_equal(plain[:, :, ::-1], flipped)
    inverted = fill(path, Augment(crop=False, flip=0.0, hook=_invert))
    assert np.array_equal(inverted, 255 - plain)
    assert fill(path, None).shape == (3, 32, 32)


def test_corrupt_file_is_an_item_error(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    with pytest.raises(ItemError):
        fill(tmp_path / "bad.jpg", Augment())


def _invert(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - rgb
