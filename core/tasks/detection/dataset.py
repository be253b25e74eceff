"""Detection datasets in the app's store: the images go through `core.data.store` (safe decode, content-hash names),
the dataset is marked `task = "detection"`, and boxes, classes and the split live in a side file,
`dataset_dir(id)/detection.json` (image paths in it are the store's relative `files/…` names).

Also `resolve`: the manifest frozen into a run, from a stored dataset id or a folder path (annotations found there).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from core.data import store
from core.data.names import clean_label
from core.storage import read_json, write_json_atomic
from core.tasks.detection.data import (
    AnnotationError,
    DetectionSet,
    ImageAnn,
    Problem,
    assign_splits,
    clip_boxes,
    load_folder,
    summary,
)
from core.tasks.detection.model import suggest_config

SIDE_FILE = "detection.json"
TASK_NAME = "detection"
IMAGES_LABEL = "images"
ProgressFn = Callable[[int, int], None]


def _side(dataset_id: str) -> Path:
    return store.dataset_dir(dataset_id) / SIDE_FILE


def load_set(dataset_id: str) -> DetectionSet:
    """The stored dataset's boxes, with absolute image paths. Raises DatasetError for unknown ids."""
    folder = store.dataset_dir(dataset_id)
    data = read_json(folder / SIDE_FILE)
    if data is None:
        raise store.DatasetError("this dataset has no detection annotations (it was not imported for detection)")
    ds = DetectionSet.from_dict(data)
    for a in ds.images:
        a.path = str(store.file_path(dataset_id, a.path))
    return ds


def save_set(dataset_id: str, ds: DetectionSet, extra: dict | None = None) -> None:
    """Write the side file atomically (paths stored relative to the dataset folder); keys other than the set's own
    (e.g. a sample marker) are kept, and `extra` adds some."""
    folder = store.dataset_dir(dataset_id)
    data = ds.to_dict()
    old = read_json(folder / SIDE_FILE, {}) or {}
    kept = {k: v for k, v in old.items() if k not in data} if isinstance(old, dict) else {}
    for row in data["images"]:
        rel = Path(row["path"]).relative_to(folder).as_posix() if os.path.isabs(row["path"]) else row["path"]
        row["path"] = rel
    write_json_atomic(folder / SIDE_FILE, {**kept, **(extra or {}), **data})


def _store_images(files: Sequence[tuple[str, str | bytes]], name: str, on_progress: ProgressFn | None
                  ) -> tuple[store.Dataset, list[store.Item], list[store.Skipped]]:
    result = store.import_files([(orig, data, IMAGES_LABEL) for orig, data in files], name, on_progress=on_progress)
    store.set_task(result.dataset.id, TASK_NAME)
    return result.dataset, list(result.dataset.items), list(result.skipped)


def _match(items: Iterable[store.Item], images: Sequence[ImageAnn]) -> dict[int, store.Item]:
    """Stored items by the position of the image they came from (matched by content hash, then by order)."""
    pool: dict[str, list[store.Item]] = {}
    for it in sorted(items, key=lambda it: it.file):
        pool.setdefault(it.sha256, []).append(it)
    out = {}
    for k, a in enumerate(images):
        hits = pool.get(a.sha256)
        if hits:
            out[k] = hits.pop(0)
    return out


def import_folder(folder: str | Path, name: str, annotations: str | Path | None = None, seed: int = 0,
                  val_fraction: float = 0.2, on_progress: ProgressFn | None = None,
                  shown: str | None = None) -> tuple[str, DetectionSet]:
    """Import a folder of images with COCO / VOC / YOLO annotations (found automatically) into the store.

    ``shown`` is the name the user knows the folder by (a zip's name when ``folder`` is where it was extracted): it
    stands for the folder's path in messages and in the recorded source."""
    try:
        ds = load_folder(folder, annotations, seed, val_fraction)
    except AnnotationError as err:
        raise AnnotationError(_as_shown(str(err), folder, shown)) from None
    if shown:
        ds = replace(ds, source=_as_shown(ds.source, folder, shown),
                     problems=[replace(p, message=_as_shown(p.message, folder, shown),
                                       file=_as_shown(p.file, folder, shown)) for p in ds.problems])
    if not ds.images:
        why = " ".join(p.message for p in ds.problems[:3])
        raise AnnotationError(f"{shown or Path(folder).name}: no photo can be imported." + (f" {why}" if why else ""))
    stored, items, skipped = _store_images([(a.name, a.path) for a in ds.images], name, on_progress)
    matched = _match(items, ds.images)
    kept = []
    for k, a in enumerate(ds.images):
        item = matched.get(k)
        if item is None:
            continue
        kept.append(replace(a, path=str(stored.root / item.file)))
    problems = ds.problems + [Problem("unreadable", "warning", f"{s.original_name}: {s.reason}; left out.",
                                      s.original_name) for s in skipped]
    final = replace(ds, images=kept, problems=problems)
    save_set(stored.id, final)
    return stored.id, load_set(stored.id)


def _as_shown(text: str, folder: str | Path, shown: str | None) -> str:
    """``text`` with the path of ``folder`` written as ``shown`` (the user's name for it), when one is given."""
    return text.replace(str(folder), shown) if shown and text else text


def import_zip(zip_path: str | Path, name: str, annotations_name: str | None = None, seed: int = 0,
               on_progress: ProgressFn | None = None, display_name: str | None = None) -> tuple[str, DetectionSet]:
    """Extract a zip safely (`core.data.archive`) and import it like a folder.

    ``display_name`` is the zip's name as the user knows it (an upload spooled under another name): messages and
    the recorded source speak of it, never of the temporary folder it was extracted to."""
    from core.data.archive import ArchiveLimits, extract_archive
    from core.settings import datasets_root

    shown = display_name or Path(zip_path).name
    tmp = datasets_root() / f".extract-{secrets.token_hex(8)}"
    try:
        extract_archive(zip_path, tmp, limits=ArchiveLimits())
        root = tmp
        entries = [p for p in tmp.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir():  # a zip of one folder
            root = entries[0]
        ann = root / annotations_name if annotations_name else None
        inner = shown if root == tmp else f"{shown}: {root.name}"
        return import_folder(root, name, ann, seed, on_progress=on_progress, shown=inner)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_uploads(files: Iterable[tuple[str, bytes]], name: str | None = None, seed: int = 0,
                   on_progress: ProgressFn | None = None) -> tuple[str, DetectionSet]:
    """A folder dropped in the browser ((relative path, bytes) per file): written under checked names into a
    temporary folder, then imported like a folder (annotations found automatically). The dataset is called `name`,
    else the dropped folder's name; messages speak of that folder by its own name."""
    from core.data.archive import write_uploaded_files
    from core.settings import datasets_root

    tmp = datasets_root() / f".extract-{secrets.token_hex(8)}"
    tmp.mkdir(parents=True)
    try:
        write_uploaded_files(files, tmp)
        entries = [p for p in tmp.iterdir() if not p.name.startswith(".")]
        if not entries:
            raise AnnotationError("The dropped folder holds no files.")
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        shown = root.name if root != tmp else "the dropped folder"
        return import_folder(root, name or (root.name if root != tmp else "My boxes"), seed=seed,
                             on_progress=on_progress, shown=shown)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_images(files: Sequence[tuple[str, bytes | str]], name: str, classes: Sequence[str] = (), seed: int = 0,
                  on_progress: ProgressFn | None = None) -> tuple[str, DetectionSet]:
    """Images alone (uploads or paths): every image starts without boxes; draw them in the app."""
    stored, items, skipped = _store_images(files, name, on_progress)
    images = [ImageAnn(it.original_name, str(stored.root / it.file), width=it.width, height=it.height,
                       sha256=it.sha256) for it in items]
    problems = [Problem("unreadable", "warning", f"{s.original_name}: {s.reason}; left out.", s.original_name)
                for s in skipped]
    ds = assign_splits(DetectionSet("drawn", "", [clean_label(c) for c in classes if clean_label(c)], images,
                                    problems), seed)
    save_set(stored.id, ds)
    return stored.id, load_set(stored.id)


def add_images(dataset_id: str, files: Sequence[tuple[str, bytes | str]]) -> DetectionSet:
    """Add images (e.g. camera photos) without boxes; the split is redrawn with the saved seed (stable)."""
    ds = load_set(dataset_id)
    before = {Path(a.path).name for a in ds.images}
    result = store.add_images(dataset_id, IMAGES_LABEL, files)
    for it in result.dataset.items:
        if Path(it.file).name not in before:
            ds.images.append(ImageAnn(it.original_name, str(result.dataset.root / it.file), width=it.width,
                                      height=it.height, sha256=it.sha256))
    ds = assign_splits(ds, int(ds.split.get("seed", 0)), float(ds.split.get("val_fraction", 0.2)))
    save_set(dataset_id, ds)
    return ds


def set_boxes(dataset_id: str, image_path: str, boxes: Sequence[Sequence[float]], labels: Sequence[str]
              ) -> DetectionSet:
    """Replace one image's boxes (pixels x1, y1, x2, y2) and class names; new class names are added. Boxes are
    clipped to the image; empty ones are dropped."""
    ds = load_set(dataset_id)
    target = next((a for a in ds.images if a.path == image_path or Path(a.path).name == Path(image_path).name), None)
    if target is None:
        raise store.DatasetError("that image is not in this dataset")
    names = [clean_label(n) for n in labels]
    if any(not n for n in names):
        raise store.DatasetError("every box needs a class name")
    target.boxes = [[float(v) for v in b] for b in boxes]
    target.labels = names
    notes: list[Problem] = []
    clip_boxes(target, int(target.width or 0) or 10**6, int(target.height or 0) or 10**6, notes)
    for n in names:
        if n not in ds.classes:
            ds.classes.append(n)
    save_set(dataset_id, ds)
    return ds


def add_class(dataset_id: str, name: str) -> DetectionSet:
    ds = load_set(dataset_id)
    label = clean_label(name)
    if not label:
        raise store.DatasetError("a class name cannot be empty")
    if any(c.casefold() == label.casefold() for c in ds.classes):
        raise store.DatasetError(f"a class named {label!r} already exists")
    ds.classes.append(label)
    save_set(dataset_id, ds)
    return ds


def rename_class(dataset_id: str, old: str, new: str) -> DetectionSet:
    ds = load_set(dataset_id)
    label = clean_label(new)
    if old not in ds.classes:
        raise store.DatasetError(f"there is no class named {old!r}")
    if not label or any(c.casefold() == label.casefold() and c != old for c in ds.classes):
        raise store.DatasetError(f"cannot rename to {new!r} (empty or already used)")
    ds.classes = [label if c == old else c for c in ds.classes]
    for a in ds.images:
        a.labels = [label if c == old else c for c in a.labels]
    save_set(dataset_id, ds)
    return ds


def resplit(dataset_id: str, seed: int, val_fraction: float = 0.2) -> DetectionSet:
    ds = load_set(dataset_id)
    for a in ds.images:
        a.split = None
    ds = assign_splits(ds, seed, val_fraction)
    save_set(dataset_id, ds)
    return ds


def list_sets() -> list[store.DatasetSummary]:
    """Stored detection datasets, newest first."""
    with contextlib.suppress(OSError):
        return store.list_datasets(task=TASK_NAME)
    return []


# --- the manifest frozen into a run ------------------------------------------------------------------------------

def _dataset_name(dataset: str, kind: str) -> str:
    """The name people know the photos by (the run's name and pages show it): the stored set's, or the folder's."""
    if kind == "folder":
        return Path(dataset).resolve().name
    try:
        return store.load_dataset(dataset).name
    except (store.DatasetError, OSError):
        return dataset


def manifest_from_set(ds: DetectionSet, dataset: str) -> dict:
    """The run's dataset.json: classes, every image with its absolute path, split and boxes, and the report."""
    report = summary(ds)
    report.pop("box_sizes", None)
    report.pop("boxes_per_image", None)
    items = [{"path": a.path, "name": a.name, "split": a.split or "train", "boxes": a.boxes, "labels": a.labels,
              "width": a.width, "height": a.height} for a in ds.images]
    kind = "folder" if Path(dataset).is_dir() else "stored"
    source = {"kind": kind, "id": dataset if kind == "stored" else "", "name": _dataset_name(dataset, kind),
              "format": ds.format, "annotations": ds.source, "val_fraction": ds.split.get("val_fraction")}
    detector = suggest_config([min(a.width or 0, a.height or 0) for a in ds.images if a.width and a.height])
    return {"task": TASK_NAME, "dataset": dataset, "format": ds.format, "source": source, "classes": ds.classes,
            "split": ds.split, "detector": asdict(detector), "items": items, "report": report,
            "problems": [p.to_dict() for p in ds.problems[:200]]}


def resolve(dataset: str, seed: int = 0, annotations: str | None = None, val_fraction: float = 0.2) -> dict:
    """A run manifest from a stored detection dataset id or a folder of images with annotations.

    Raises `core.trainset.DatasetProblem` with a message for people."""
    from core.trainset import DatasetProblem

    if dataset.startswith("sample:"):  # "sample:detection", as "sample:segmentation" and "sample:textures" work
        from core.tasks.detection.sample import FOLDER, ensure_sample

        if dataset.split(":", 1)[1] not in ("detection", FOLDER):
            raise DatasetProblem(f"{dataset}: no such sample; the detection sample is sample:detection.")
        dataset = ensure_sample()
    try:
        if Path(dataset).is_dir() or annotations:
            ds = load_folder(dataset, annotations, seed, val_fraction)
        else:
            try:
                ds = load_set(dataset)
            except store.DatasetError as err:
                if err.reason == "no such dataset":
                    raise DatasetProblem(f"{dataset}: no such folder, and no stored dataset with this id.") from None
                raise
    except (AnnotationError, store.DatasetError) as err:
        raise DatasetProblem(str(getattr(err, "reason", err))) from None
    if not ds.classes:
        raise DatasetProblem("No classes and no boxes yet: draw boxes and name their classes, or import annotations.")
    report = summary(ds)
    if report["blocking"]:
        raise DatasetProblem(" ".join(report["blocking"]))
    return manifest_from_set(ds, dataset)
