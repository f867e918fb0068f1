import os

import pytest

from gristmill.errors import SpecError
from gristmill.sources import InputList, display_name, files, list_inputs


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def names(inputs):
    return [display_name(inputs.raw(i)) for i in range(len(inputs))]


def test_folder_walk_is_recursive_sorted_and_keeps_repeated_basenames(tmp_path):
    for rel in ("b/cat.jpg", "a/cat.jpg", "a/deep/er/dog.PNG", "notes.txt", "c.jpeg"):
        touch(tmp_path / rel)
    inputs = list_inputs([str(tmp_path)])
    assert names(inputs) == ["a/cat.jpg", "a/deep/er/dog.PNG", "b/cat.jpg", "c.jpeg"]
    assert inputs.path(0) == os.fsencode(str(tmp_path / "a/cat.jpg"))


def test_symlink_loops_are_walked_once_and_folders_named_like_images_are_not_inputs(tmp_path):
    touch(tmp_path / "a/x.jpg")
    (tmp_path / "a/loop").symlink_to(tmp_path)
    (tmp_path / "dir.jpg").mkdir()
    touch(tmp_path / "dir.jpg/inside.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    found = names(list_inputs([str(tmp_path)]))
    assert found == ["a/x.jpg", "broken.jpg", "dir.jpg/inside.jpg"]


def test_list_file_and_glob_sources(tmp_path):
    for rel in ("p/one.jpg", "p/two.jpg", "q/three.jpg"):
        touch(tmp_path / rel)
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\np/two.jpg\n\n" + str(tmp_path / "q/three.jpg") + "\n")
    assert names(list_inputs([str(listing)])) == ["p/two.jpg", "q/three.jpg"]
    assert names(list_inputs([str(tmp_path / "p" / "*.jpg")])) == ["one.jpg", "two.jpg"]
    assert names(list_inputs([str(tmp_path / "**" / "*.jpg")])) == [
        "p/one.jpg", "p/two.jpg", "q/three.jpg"]


def test_several_sources_are_named_from_their_common_root(tmp_path):
    touch(tmp_path / "x/a.jpg")
    touch(tmp_path / "y/a.jpg")
    assert names(list_inputs([str(tmp_path / "x"), str(tmp_path / "y")])) == ["x/a.jpg", "y/a.jpg"]


def test_non_utf8_names_open_and_display_escaped(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg"
    with open(raw, "wb") as f:
        f.write(b"x")
    inputs = list_inputs([str(tmp_path)])
    assert os.path.exists(inputs.path(0))
    assert display_name(inputs.raw(0)) == "caf\\xe9.jpg"


@pytest.mark.parametrize("make,message", [
    (lambda p: str(p / "nope"), "does not exist"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "no image files"),
    (lambda p: (p / "bin.txt").write_bytes(b"\0\1\2") and str(p / "bin.txt"), "neither"),
])
def test_bad_sources_are_one_line_spec_errors(tmp_path, make, message):
    with pytest.raises(SpecError, match=message) as info:
        list_inputs([make(tmp_path)])
    assert "\n" not in str(info.value)


def test_input_list_is_compact_and_round_trips(tmp_path):
    inputs = InputList.from_names(b"/r", [b"b.jpg", b"a.jpg", b"a.jpg", b"c/d.jpg"])
    assert len(inputs) == 3 and inputs.raw_range(0, 3) == [b"a.jpg", b"b.jpg", b"c/d.jpg"]
    assert inputs.blob.nbytes == len(b"a.jpgb.jpgc/d.jpg")
    path = str(tmp_path / "inputs.npz")
    inputs.save(path)
    again = InputList.load(path)
    assert again.raw_range(0, 3) == inputs.raw_range(0, 3) and again.root == b"/r"
    assert again.digest(0, 2) == inputs.digest(0, 2) != inputs.digest(1, 3)


@pytest.mark.parametrize("lines,plain", [
    (["photos/b/2.jpg", "photos/a/1.jpg", "photos/a/1.jpg", "photos/a b/3.jpg"], True),
    (["x.jpg", "photos/a/1.jpg"], True),  # a name at the top: the list's folder is the root
    (["photos/a/1.jpg"], True),
    (["photos/a/1.jpg", "", "# a comment", "  photos/b/2.jpg ", "./photos/c/3.jpg"], False),
    (["photos/a/1.jpg", "photos/a//2.jpg", "/abs/4.jpg"], False),
])
def test_a_large_list_file_is_listed_fast_with_the_same_names_and_root(tmp_path, lines, plain):
    """The plain list path (numpy, no second object per name) and the general rules agree."""
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    assert (files._plain_list(str(listing)) is not None) == plain
    got = files.list_files([str(listing)])
    root, found = files.find_files(str(listing))
    root = files.common_root([root])
    want = InputList.from_names(root, files._relative(found, root))
    assert (got.root, got.raw_range(0, len(got))) == (want.root, want.raw_range(0, len(want)))
    assert got.digest(0, len(got)) == want.digest(0, len(want))
