"""Index a folder of images: detect the layout and stream items (one per candidate image) and problems.

Layouts: ``root/<class>/*``, ``root/{train,val,test}/<class>/*`` (``valid``/``validation`` mean val), each possibly
inside one or two wrapping folders (a zip of ``myset/ants/...``). Files in sub-folders of a class folder belong to
that class. Junk and hidden files are skipped silently; everything else that is not used is reported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.data.names import (
    IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    clean_label,
    extension,
    is_junk_dir,
    is_junk_file,
)

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
MAX_WRAPPERS = 2
MAX_DEPTH = 10


@dataclass(frozen=True)
class Layout:
    """Where the classes are. ``splits`` maps split -> folder name (empty for the class-folder layout)."""

    root: Path  # the folder holding class (or split) folders, after unwrapping
    kind: str  # "class_folders" | "split_folders" | "empty"
    prefix: str  # wrapping folders between the scanned folder and ``root`` ('' or 'myset/')
    splits: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ScanItem:
    """A file that should be an image of ``label``. ``rel`` is '/'-separated, relative to the scanned folder."""

    path: Path
    rel: str
    label: str
    split: str | None


@dataclass(frozen=True)
class ScanProblem:
    rel: str
    kind: str  # not_image_file | unsupported_format | outside_class_folder | link | too_deep
    reason: str
    in_class: bool = False


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """Visible, non-junk entries of one folder, sorted by name (one folder at a time keeps memory small)."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not (is_junk_dir(e.name) if _is_dir(e) else is_junk_file(e.name))]
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_candidate(name: str) -> bool:
    ext = extension(name)
    return ext in IMAGE_EXTENSIONS or ext == ""


def detect_layout(folder: str | os.PathLike[str]) -> Layout:
    """Work out the layout of ``folder`` (reads only the top levels)."""
    root = Path(folder)
    prefix = ""
    for _ in range(MAX_WRAPPERS + 1):
        entries = _entries(root)
        dirs = [e for e in entries if _is_dir(e)]
        files = [e for e in entries if not _is_dir(e) and _is_candidate(e.name)]
        if not dirs:
            return Layout(root, "empty" if not files else "class_folders", prefix)
        split_dirs = [e for e in dirs if e.name.lower() in SPLIT_ALIASES]
        kinds = {SPLIT_ALIASES[e.name.lower()] for e in split_dirs}
        only_splits = len(split_dirs) == len(dirs) and ("train" in kinds or len(kinds) >= 2)
        if only_splits or ("train" in kinds and len(kinds) >= 2):
            order = {"train": 0, "val": 1, "test": 2}
            pairs = sorted(((SPLIT_ALIASES[e.name.lower()], e.name) for e in split_dirs), key=lambda p: order[p[0]])
            return Layout(root, "split_folders", prefix, tuple(pairs))
        if len(dirs) == 1 and not files and prefix.count("/") < MAX_WRAPPERS and _has_subdirs(Path(dirs[0].path)):
            prefix += dirs[0].name + "/"
            root = Path(dirs[0].path)
            continue
        return Layout(root, "class_folders", prefix)
    return Layout(root, "class_folders", prefix)  # pragma: no cover - loop always returns


def _has_subdirs(folder: Path) -> bool:
    return any(_is_dir(e) for e in _entries(folder))


def iter_scan(folder: str | os.PathLike[str], layout: Layout | None = None) -> Iterator[ScanItem | ScanProblem]:
    """Stream items and problems for ``folder`` in a stable order (sorted per folder)."""
    layout = layout or detect_layout(folder)
    if layout.kind == "empty":
        return
    if layout.kind == "class_folders":
        yield from _scan_classes(layout.root, layout.prefix, None)
        return
    split_names = {name for _, name in layout.splits}
    for entry in _entries(layout.root):
        if not _is_dir(entry) or entry.name not in split_names:
            yield from _outside(entry, layout.prefix)
    for split, name in layout.splits:
        yield from _scan_classes(layout.root / name, f"{layout.prefix}{name}/", split)


def _outside(entry: os.DirEntry[str], prefix: str) -> Iterator[ScanProblem]:
    rel = prefix + entry.name + ("/" if _is_dir(entry) else "")
    if entry.is_symlink():
        yield ScanProblem(rel, "link", f"{rel} is a link; links are not followed")
    elif _is_dir(entry):
        yield ScanProblem(rel, "outside_class_folder", f"folder {rel} is not a train/val/test folder and was ignored")
    else:
        yield ScanProblem(rel, "outside_class_folder",
                          f"{rel} is not inside a class folder and was ignored (put images in one folder per class)")


def _scan_classes(root: Path, prefix: str, split: str | None) -> Iterator[ScanItem | ScanProblem]:
    for entry in _entries(root):
        if not _is_dir(entry):
            yield from _outside(entry, prefix)
            continue
        label = clean_label(entry.name)
        if not label:
            yield ScanProblem(prefix + entry.name + "/", "outside_class_folder",
                              f"folder {prefix + entry.name!r} has no usable class name and was ignored")
            continue
        yield from _walk_class(Path(entry.path), f"{prefix}{entry.name}/", label, split, 0)


def _walk_class(folder: Path, prefix: str, label: str, split: str | None,
                depth: int) -> Iterator[ScanItem | ScanProblem]:
    for entry in _entries(folder):
        rel = prefix + entry.name
        if entry.is_symlink():
            yield ScanProblem(rel, "link", f"{rel} is a link; links are not followed", in_class=True)
        elif _is_dir(entry):
            if depth + 1 >= MAX_DEPTH:
                yield ScanProblem(rel + "/", "too_deep", f"folder {rel} is nested too deep and was ignored", True)
            else:
                yield from _walk_class(Path(entry.path), rel + "/", label, split, depth + 1)
        else:
            yield from _file(entry, rel, label, split)


def _file(entry: os.DirEntry[str], rel: str, label: str, split: str | None) -> Iterator[ScanItem | ScanProblem]:
    ext = extension(entry.name)
    if ext in IMAGE_EXTENSIONS or ext == "":
        yield ScanItem(Path(entry.path), rel, label, split)
    elif ext in UNSUPPORTED_IMAGE_EXTENSIONS:
        fmt = UNSUPPORTED_IMAGE_EXTENSIONS[ext]
        yield ScanProblem(rel, "unsupported_format",
                          f"{rel}: format {fmt} is not supported (convert it to JPEG or PNG); it was ignored", True)
    else:
        yield ScanProblem(rel, "not_image_file", f"{rel} is not an image file ({ext}) and was ignored", True)


def class_names(layout: Layout) -> list[str]:
    """Class folder names (cleaned), in sorted order, across all split folders; includes empty classes."""
    roots = [layout.root / name for _, name in layout.splits] if layout.kind == "split_folders" else [layout.root]
    if layout.kind == "empty":
        return []
    names = {clean_label(e.name) for r in roots for e in _entries(r) if _is_dir(e)}
    return sorted(n for n in names if n)
