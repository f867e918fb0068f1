"""Labelled sources: ImageFolder folders, 'path label' lists, globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.errors import SpecError
from gristmill.loader.labels import list_labeled


def test_folder_classes_are_sorted_subfolders(labeled: Path) -> None:
    got = list_labeled(str(labeled))
    assert got.classes == ("astronaut", "chelsea", "coffee", "rocket")
    assert len(got) == 32
    for i in range(len(got)):
        cls = Path(got.name(i)).parent.name
        assert got.classes[got.labels[i]] == cls


def test_nested_class_folders_and_loose_files(tmp_path: Path, labeled: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    data = (labeled / "coffee" / "0.jpg").read_bytes()
    for rel in ("b/deep/x.jpg", "a/y.jpg", "loose.jpg"):
        (tmp_path / rel).write_bytes(data)
    got = list_labeled(str(tmp_path))
    assert got.classes == ("a", "b")
    by_name = {Path(got.name(i)).name: int(got.labels[i]) for i in range(len(got))}
    assert by_name == {"x.jpg": 1, "y.jpg": 0, "loose.jpg": -1}


def test_list_file_with_labels(tmp_path: Path, labeled: Path) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(f"# path label\n{labeled}/coffee/1.jpg 3\n\n"
                       f"{labeled}/rocket/2.jpg 0\n{labeled}/chelsea/0.jpg\n")
    got = list_labeled(str(listing))
    pairs = {Path(got.name(i)).parent.name: int(got.labels[i]) for i in range(len(got))}
    assert pairs == {"coffee": 3, "rocket": 0, "chelsea": -1}
    assert got.classes == ()


def test_glob_has_no_labels(labeled: Path) -> None:
    got = list_labeled(f"{labeled}/c*/*.jpg")
    assert len(got) == 16 and set(got.labels.tolist()) == {-1}


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        list_labeled(str(tmp_path / "nope"))
