"""The people a run enrols: a manifest of photos per person from a stored dataset (its classes are the people) or
from a folder read in place (one sub-folder per person), split per person into enrolment photos and held-back
photos (used to choose the "unknown" threshold and, for fine-tuning, never trained on)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from core.data.names import IMAGE_EXTENSIONS
from core.trainset import DatasetProblem

IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))  # the photos the app decodes (HEIC and AVIF too), as the store
VAL_FRACTION = 0.25
_JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints")


def scan_people(folder: str | Path) -> tuple[dict[str, list[Path]], list[str]]:
    """{person: photo paths} from `folder`/<person>/<photo>, and notes about anything skipped."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetProblem(f"{folder} is not a folder.")
    people: dict[str, list[Path]] = {}
    notes: list[str] = []
    loose = 0
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name in _JUNK:
            continue
        if entry.is_symlink():
            notes.append(f"{entry.name}: a link, skipped")
            continue
        if entry.is_file():
            loose += entry.suffix.lower() in IMAGE_SUFFIXES
            continue
        if not entry.is_dir():
            continue
        photos = []
        for f in sorted(entry.iterdir(), key=lambda p: p.name):
            if f.name.startswith(".") or f.name in _JUNK or f.is_symlink() or not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                photos.append(f)
            else:
                notes.append(f"{entry.name}/{f.name}: not an image file, skipped")
        if photos:
            people[entry.name] = photos
        else:
            notes.append(f"{entry.name}: no photos, skipped")
    if loose:
        notes.append(f"{loose} photos directly in the folder (outside any person's folder) were skipped")
    return people, notes


def dropped_folder_name(paths: Sequence[str], default: str = "People") -> str:
    """The name of the folder a user dropped in the browser ('team' for 'team/ann/1.jpg', 'team/bob/2.jpg'): every
    file sits in a person's folder inside it. `default` when the files do not share one such folder."""
    split = [PurePosixPath(p.replace("\\", "/")).parts for p in paths]
    tops = {parts[0].strip() for parts in split}
    if not split or len(tops) != 1 or any(len(parts) < 3 for parts in split):
        return default
    top = tops.pop()
    return top if top not in ("", ".", "..") else default


def split_person(n: int, seed: int, person: str, val_fraction: float = VAL_FRACTION) -> list[str]:
    """'train' (enrolment) or 'val' (held back) for each of a person's n photos; people with fewer than 3 photos
    keep them all for enrolment."""
    n_val = 0 if n < 3 else max(1, round(n * val_fraction))
    order = list(range(n))
    random.Random(f"{seed}:{person}").shuffle(order)
    held = set(order[:n_val])
    return ["val" if i in held else "train" for i in range(n)]


def _finish(people: dict[str, list[dict]], source: dict, notes: list[str], seed: int) -> dict:
    if len(people) < 2:
        found = ", ".join(people) or "none"
        raise DatasetProblem(f"Face recognition needs at least 2 people (one folder each); found {len(people)} "
                             f"({found}).")
    items = []
    for person in sorted(people):
        photos = people[person]
        for photo, split in zip(photos, split_person(len(photos), seed, person), strict=True):
            items.append({**photo, "label": person, "split": split})
    few = [p for p in sorted(people) if len(people[p]) < 3]
    if few:
        notes = [*notes, f"Fewer than 3 photos (no held-back photo to check them): {', '.join(few)}"]
    return {"task": "faces", "classes": sorted(people), "items": items, "source": source, "notes": notes,
            "seed": seed, "val_fraction": VAL_FRACTION}


def from_folder(folder: str | Path, seed: int = 0) -> dict:
    root = Path(folder).expanduser().resolve()
    found, notes = scan_people(root)
    people = {p: [{"path": str(f), "name": f"{p}/{f.name}"} for f in files] for p, files in found.items()}
    return _finish(people, {"kind": "folder", "path": str(root)}, notes, seed)


def from_store(dataset_id: str, seed: int = 0) -> dict:
    from core.data.store import load_dataset

    ds = load_dataset(dataset_id)
    people: dict[str, list[dict]] = {}
    for it in ds.items:
        people.setdefault(it.label, []).append({"path": str(ds.path(it)), "name": it.original_name,
                                                "file": it.file})
    return _finish(people, {"kind": "store", "id": ds.id, "name": ds.name}, [], seed)


def resolve(dataset: str, seed: int = 0) -> dict:
    """`dataset` is a stored dataset id or a folder path (one sub-folder per person)."""
    if re.fullmatch(r"[0-9a-f]{32}", dataset) and not Path(dataset).exists():
        return from_store(dataset, seed)
    return from_folder(dataset, seed)


def cache_folder(manifest: dict, run_dir: Path) -> Path:
    """Where a run's detections and crops are cached: the stored dataset's `faces/` folder, else the run's."""
    source = manifest.get("source") or {}
    if source.get("kind") == "store":
        from core.data.store import DatasetError, dataset_dir

        try:
            return dataset_dir(str(source.get("id"))) / "faces"
        except DatasetError:
            pass
    return Path(run_dir) / "faces"
