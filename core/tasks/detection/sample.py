"""The detection sample set, made offline at setup: coloured discs and squares (exact boxes) on crops of
scikit-image's bundled CC0 textures, with a COCO JSON file. `ensure_sample()` imports it into the store once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VERSION = 1
FOLDER = "detection_shapes"
CLASSES = ("disc", "square")
N_IMAGES = 48
SIZE = (320, 240)
TITLE = "Sample: shapes (discs and squares, boxes included)"


def _background(rng: np.random.Generator) -> Image.Image:
    import skimage.data

    name = str(rng.choice(["brick", "grass", "gravel"]))
    tex = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    w, h = SIZE
    x, y = int(rng.integers(0, tex.width - w)), int(rng.integers(0, tex.height - h))
    return tex.crop((x, y, x + w, y + h))


def draw_image(rng: np.random.Generator, n_max: int = 3) -> tuple[Image.Image, list[list[float]], list[str]]:
    """One picture with 0–`n_max` non-overlapping shapes; boxes [x1, y1, x2, y2] are exact (pixels)."""
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    boxes: list[list[float]] = []
    labels: list[str] = []
    for _ in range(int(rng.integers(0, n_max + 1))):
        for _try in range(20):
            side = int(rng.integers(28, 90))
            x1, y1 = int(rng.integers(0, SIZE[0] - side)), int(rng.integers(0, SIZE[1] - side))
            box = [x1, y1, x1 + side, y1 + side]
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in boxes):
                break
        else:
            continue
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = str(rng.choice(CLASSES))
        if kind == "disc":
            draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour, outline=(0, 0, 0))
        else:
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour, outline=(0, 0, 0))
        boxes.append([float(v) for v in box])
        labels.append(kind)
    return img, boxes, labels


def make(dest: Path, seed: int = 0) -> Path:
    """Write `dest/detection_shapes/images/*.jpg` and `annotations.json` (COCO); deterministic for a seed."""
    root = Path(dest) / FOLDER
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for i in range(N_IMAGES):
        img, boxes, labels = draw_image(rng)
        name = f"shapes_{i:03d}.jpg"
        img.save(root / "images" / name, quality=92)
        coco["images"].append({"id": i + 1, "file_name": name, "width": SIZE[0], "height": SIZE[1]})
        for b, lbl in zip(boxes, labels, strict=True):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": CLASSES.index(lbl) + 1, "iscrowd": 0,
                                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                        "area": (b[2] - b[0]) * (b[3] - b[1])})
    (root / "annotations.json").write_text(json.dumps(coco, indent=1))
    return root


def sample_folder() -> Path:
    """The folder setup made (raises DatasetError when it is missing)."""
    from core.data.store import DatasetError
    from core.settings import sample_data_root

    folder = sample_data_root() / FOLDER
    if not (folder / "annotations.json").is_file():
        raise DatasetError("the detection sample is not on this machine yet: run the setup command from the README "
                           "once (it makes sample_data/)")
    return folder


def find_sample() -> str | None:
    """The stored copy of this sample (this version), or None."""
    from core.data.store import DatasetError
    from core.storage import read_json
    from core.tasks.detection.dataset import SIDE_FILE, list_sets

    for s in list_sets():
        try:
            from core.data.store import dataset_dir

            side = read_json(dataset_dir(s.id) / SIDE_FILE, {}) or {}
        except DatasetError:
            continue
        if side.get("sample") == {"name": FOLDER, "version": VERSION}:
            return s.id
    return None


def ensure_sample() -> str:
    """Import the sample into the store once; the same dataset id every time after."""
    from core.tasks.detection.dataset import import_folder, load_set, save_set

    found = find_sample()
    if found:
        return found
    dataset_id, _ = import_folder(sample_folder(), TITLE)
    ds = load_set(dataset_id)
    save_set(dataset_id, ds, extra={"sample": {"name": FOLDER, "version": VERSION}})
    return dataset_id


def make_rectangles(dest: Path, n: int = 24, size: int = 96, seed: int = 0, classes: tuple[str, ...] = ("red",),
                    fmt: str = "coco") -> Path:
    """Tiny synthetic photos for tests and quick checks: 1–2 solid rectangles of one colour per class on a grey
    background, exact boxes, written as `dest/images/*.png` + COCO `annotations.json` (or YOLO `labels/`)."""
    palette = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 30)}
    rng = np.random.default_rng(seed)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    for i in range(n):
        grey = int(rng.integers(90, 160))
        img = Image.new("RGB", (size, size), (grey, grey, grey))
        draw = ImageDraw.Draw(img)
        rows = []
        for _ in range(int(rng.integers(1, 3))):
            w, h = int(rng.integers(size // 5, size // 2)), int(rng.integers(size // 5, size // 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            k = int(rng.integers(0, len(classes)))
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=palette.get(classes[k], (200, 40, 200)))
            rows.append((k, [float(x), float(y), float(x + w), float(y + h)]))
        name = f"img_{i:03d}.png"
        img.save(dest / "images" / name)
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for k, b in rows:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": k + 1,
                                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": 0,
                                        "area": (b[2] - b[0]) * (b[3] - b[1])})
        if fmt == "yolo":
            (dest / "labels").mkdir(exist_ok=True)
            lines = [f"{k} {(b[0] + b[2]) / 2 / size:.6f} {(b[1] + b[3]) / 2 / size:.6f} {(b[2] - b[0]) / size:.6f} "
                     f"{(b[3] - b[1]) / size:.6f}" for k, b in rows]
            (dest / "labels" / f"img_{i:03d}.txt").write_text("\n".join(lines) + "\n")
    if fmt == "yolo":
        (dest / "labels" / "classes.txt").write_text("\n".join(classes) + "\n")
    else:
        (dest / "annotations.json").write_text(json.dumps(coco))
    return dest
