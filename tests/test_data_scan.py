"""Folder layouts, junk skipping, and reporting of everything not used."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from data_fixtures import make_tree, write_image

from core.data.scan import ScanItem, ScanProblem, class_names, detect_layout, iter_scan


def _split(folder: Path) -> tuple[list[ScanItem], list[ScanProblem]]:
    items, problems = [], []
    for x in iter_scan(folder):
        (items if isinstance(x, ScanItem) else problems).append(x)
    return items, problems


def test_class_folders(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ants": 3, "bees": 2})
    layout = detect_layout(tmp_path)
    assert layout.kind == "class_folders" and layout.prefix == ""
    items, problems = _split(tmp_path)
    assert [(i.rel, i.label, i.split) for i in items][:2] == [("ants/img_000.jpg", "ants", None),
                                                               ("ants/img_001.jpg", "ants", None)]
    assert len(items) == 5 and problems == []
    assert class_names(layout) == ["ants", "bees"]


def test_split_folders_with_aliases(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ants": 2, "bees": 2}, split="train")
    make_tree(tmp_path, {"ants": 1, "bees": 1}, split="validation", seed=1)
    make_tree(tmp_path, {"ants": 1}, split="Test", seed=2)
    layout = detect_layout(tmp_path)
    assert layout.kind == "split_folders"
    assert dict(layout.splits) == {"train": "train", "val": "validation", "test": "Test"}
    items, _ = _split(tmp_path)
    assert {(i.split, i.label) for i in items} == {("train", "ants"), ("train", "bees"), ("val", "ants"),
                                                   ("val", "bees"), ("test", "ants")}
    assert any(i.rel == "validation/ants/img_000.jpg" for i in items)


def test_valid_alias_and_stray_folder(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1, "b": 1}, split="train")
    make_tree(tmp_path, {"a": 1, "b": 1}, split="valid", seed=1)
    (tmp_path / "extras").mkdir()
    layout = detect_layout(tmp_path)
    assert layout.kind == "split_folders" and dict(layout.splits)["val"] == "valid"
    _, problems = _split(tmp_path)
    assert [p.rel for p in problems] == ["extras/"]


def test_single_wrapping_folder(tmp_path: Path) -> None:
    make_tree(tmp_path / "myset", {"ants": 2, "bees": 2})
    layout = detect_layout(tmp_path)
    assert layout.kind == "class_folders" and layout.prefix == "myset/"
    items, _ = _split(tmp_path)
    assert items[0].rel == "myset/ants/img_000.jpg" and items[0].label == "ants"


def test_wrapped_split_layout_and_macos_junk(tmp_path: Path) -> None:
    make_tree(tmp_path / "data" / "hymenoptera", {"ants": 1, "bees": 1}, split="train")
    make_tree(tmp_path / "data" / "hymenoptera", {"ants": 1, "bees": 1}, split="val", seed=1)
    (tmp_path / "__MACOSX" / "data").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "data" / "._x.jpg").write_bytes(b"junk")
    layout = detect_layout(tmp_path)
    assert layout.kind == "split_folders" and layout.prefix == "data/hymenoptera/"
    items, problems = _split(tmp_path)
    assert len(items) == 4 and problems == []


def test_one_class_folder_is_not_unwrapped(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ants": 2})
    layout = detect_layout(tmp_path)
    assert layout.kind == "class_folders" and class_names(layout) == ["ants"]


def test_junk_and_hidden_files_are_skipped_silently(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ants": 1, "bees": 1})
    for rel in ["ants/.DS_Store", "ants/._img_000.jpg", "ants/Thumbs.db", "bees/desktop.ini", "bees/.secret.jpg",
                ".ipynb_checkpoints/x.jpg", "__MACOSX/ants/._y.jpg", "ants/.ipynb_checkpoints/z.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items, problems = _split(tmp_path)
    assert sorted(i.rel for i in items) == ["ants/img_000.jpg", "bees/img_000.jpg"]
    assert problems == []


def test_non_images_are_reported_not_dropped(tmp_path: Path) -> None:
    make_tree(tmp_path, {"ants": 1, "bees": 1})
    (tmp_path / "ants" / "notes.txt").write_text("hi")
    (tmp_path / "ants" / "IMG_1.CR2").write_bytes(b"x")
    (tmp_path / "ants" / "IMG_2.HEIC").write_bytes(b"x")  # a phone photo is an image candidate (decoded later)
    (tmp_path / "bees" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "README.md").write_text("readme")
    items, problems = _split(tmp_path)
    by_rel = {p.rel: p for p in problems}
    assert by_rel["ants/notes.txt"].kind == "not_image_file" and "notes.txt" in by_rel["ants/notes.txt"].reason
    assert by_rel["ants/IMG_1.CR2"].kind == "unsupported_format" and "RAW" in by_rel["ants/IMG_1.CR2"].reason
    assert by_rel["bees/clip.mp4"].kind == "not_image_file"
    assert by_rel["README.md"].kind == "outside_class_folder" and not by_rel["README.md"].in_class
    assert len(items) == 3 and "ants/IMG_2.HEIC" not in by_rel


def test_uppercase_and_odd_image_extensions_are_candidates(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "X.JPEG", 1)
    write_image(tmp_path / "a" / "y.jfif", 2)
    write_image(tmp_path / "b" / "noext", 3)
    items, problems = _split(tmp_path)
    assert sorted(i.rel for i in items) == ["a/X.JPEG", "a/y.jfif", "b/noext"] and problems == []


def test_subfolders_belong_to_their_class(tmp_path: Path) -> None:
    write_image(tmp_path / "ants" / "2019" / "summer" / "a.jpg", 1)
    write_image(tmp_path / "bees" / "b.jpg", 2)
    items, _ = _split(tmp_path)
    assert {(i.rel, i.label) for i in items} == {("ants/2019/summer/a.jpg", "ants"), ("bees/b.jpg", "bees")}


def test_symlinks_are_reported_not_followed(tmp_path: Path) -> None:
    make_tree(tmp_path / "d", {"ants": 1, "bees": 1})
    outside = tmp_path / "outside"
    make_tree(outside, {"x": 3})
    (tmp_path / "d" / "ants" / "link").symlink_to(outside / "x")
    (tmp_path / "d" / "bees" / "l.jpg").symlink_to(outside / "x" / "img_000.jpg")
    items, problems = _split(tmp_path / "d")
    assert len(items) == 2
    assert {p.rel for p in problems if p.kind == "link"} == {"ants/link", "bees/l.jpg"}


def test_empty_folder(tmp_path: Path) -> None:
    assert detect_layout(tmp_path).kind == "empty"
    assert list(iter_scan(tmp_path)) == []


def test_scan_streams_large_folders_with_small_memory(tmp_path: Path) -> None:
    n = 20_000
    for label in ("a", "b"):
        folder = tmp_path / label
        folder.mkdir()
        for i in range(n // 2):
            (folder / f"{i:06d}.jpg").touch()
    t0 = time.monotonic()
    tracemalloc.start()
    count = sum(1 for x in iter_scan(tmp_path) if isinstance(x, ScanItem))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == n
    assert peak < 6_000_000  # one folder listing at a time (a list of all 20k items needs ~11 MB)
    assert time.monotonic() - t0 < 20
