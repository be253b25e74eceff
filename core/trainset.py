"""The exact file list a run trains and validates on (its `dataset.json`), from a stored dataset or a folder."""

from __future__ import annotations

import re
from pathlib import Path

from core.data.scan import ScanItem, ScanProblem, detect_layout, iter_scan
from core.data.splits import SplitConfig, SplitItem, assign_splits


class DatasetProblem(Exception):
    """The data cannot be trained on; the message names the class or file and the reason."""


def from_store(dataset_id: str) -> dict:
    """A run manifest from a dataset in the app's store (files already validated at import)."""
    from core.data.store import dataset_report, load_dataset
    from core.data.validate import ERROR

    ds = load_dataset(dataset_id)
    if ds.report.get("blocking"):
        errors = [p.message.strip().removesuffix(".") for p in dataset_report(ds).problems if p.severity == ERROR]
        raise DatasetProblem(f"The dataset '{ds.name}' cannot be trained on until these are fixed (Data page): "
                             + "; ".join(errors or ["its check found errors"]) + ".")
    items = [{"path": str(ds.path(it)), "label": it.label, "split": it.split, "name": it.original_name}
             for it in ds.items]
    return _finish(list(ds.classes), items, {"kind": "store", "id": ds.id, "name": ds.name}, [])


def from_folder(folder: str | Path, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """A run manifest read in place from `folder` (class folders, or train/ val/ test/ folders of classes)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DatasetProblem(f"{folder} is not a folder.")
    layout = detect_layout(root)
    scanned: list[ScanItem] = []
    notes: list[str] = []
    for entry in iter_scan(root, layout):
        if isinstance(entry, ScanProblem):
            notes.append(f"{entry.rel}: {entry.reason}")
        else:
            scanned.append(entry)
    if not scanned:
        raise DatasetProblem(f"No images found in {folder}: expected one folder per class (e.g. ants/, bees/), "
                             "optionally inside train/ and val/.")
    splits = assign_splits([SplitItem(it.rel, it.label, it.split) for it in scanned],
                           SplitConfig(val_fraction=val_fraction, seed=seed))
    items = [{"path": str(it.path), "label": it.label, "split": sp, "name": it.rel}
             for it, sp in zip(scanned, splits, strict=True)]
    classes = sorted({it.label for it in scanned})
    return _finish(classes, items, {"kind": "folder", "path": str(root), "val_fraction": val_fraction,
                                    "seed": seed}, notes)


def _finish(classes: list[str], items: list[dict], source: dict, notes: list[str]) -> dict:
    counts = {c: sum(1 for it in items if it["label"] == c and it["split"] == "train") for c in classes}
    too_few = [c for c, n in counts.items() if n < 1]
    if len(classes) < 2:
        raise DatasetProblem(f"Training needs at least 2 classes; found {len(classes)} ({', '.join(classes)}).")
    if too_few:
        raise DatasetProblem(f"These classes have no training images: {', '.join(too_few)}.")
    if not any(it["split"] == "val" for it in items):
        raise DatasetProblem("There are no validation images: add a val/ folder or more images per class.")
    return {"classes": classes, "items": items, "source": source, "notes": notes}


def resolve(dataset: str, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """`dataset` is a folder path, 'sample:<name>' or a stored dataset id."""
    if dataset.startswith("sample:"):
        from core.settings import sample_data_root

        return from_folder(sample_data_root() / dataset.split(":", 1)[1], val_fraction, seed)
    if re.fullmatch(r"[0-9a-f]{32}", dataset) and not Path(dataset).exists():
        return from_store(dataset)
    return from_folder(dataset, val_fraction, seed)
