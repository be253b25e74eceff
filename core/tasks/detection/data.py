"""Detection data: COCO JSON, Pascal VOC XML and YOLO txt parsers, auto-detection, checks and the split.

Every parser returns the same `Parsed` (images with pixel boxes `x1, y1, x2, y2` and class names, plus problems
named by file). `check_images_and_boxes` then decodes every image (safely, in worker processes), clips boxes to the
image or drops them, finds duplicates, and `assign_splits` makes a seeded train/val split (duplicates kept together)
when the data has none. The result is a plain dict (`DetectionSet.to_dict`) stored beside a dataset in the store
(`detection.json`) or frozen into a run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.data.names import IMAGE_EXTENSIONS

IMAGE_EXTS = tuple(sorted(IMAGE_EXTENSIONS))  # phone photos (HEIC, AVIF) too
MAX_ANNOTATION_BYTES = 200 << 20
MAX_XML_BYTES = 2 << 20
JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints")
FORMATS = ("coco", "voc", "yolo")


class AnnotationError(Exception):
    """Annotations that cannot be read at all; the message names the file and the reason."""


@dataclass(frozen=True)
class Problem:
    """One finding, named by file: kind (machine), severity (info | warning | error), message (people)."""

    kind: str
    severity: str
    message: str
    file: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageAnn:
    """One image and its boxes (pixels of the image as decoded, EXIF orientation applied)."""

    name: str  # relative path shown to people
    path: str  # absolute path of the file ('' when the image is missing)
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    width: int | None = None  # as the annotation says (checked against the decoded image)
    height: int | None = None
    split: str | None = None
    sha256: str = ""


@dataclass
class Parsed:
    format: str
    source: str  # the annotation file or folder
    classes: list[str]
    images: list[ImageAnn]
    problems: list[Problem] = field(default_factory=list)


# --- finding images ------------------------------------------------------------------------------------------------

def _is_junk(path: Path) -> bool:
    return any(part in JUNK or part.startswith("._") for part in path.parts)


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursively, sorted, OS junk skipped)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not _is_junk(
        p.relative_to(root)))


def image_root(folder: Path) -> Path:
    """`folder/images` (or VOC's `JPEGImages`) when it holds images, else `folder`."""
    for name in ("images", "JPEGImages", "Images"):
        sub = folder / name
        if sub.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in sub.rglob("*")):
            return sub
    return folder


class _ImageIndex:
    """Finds an image by its name as an annotation writes it (relative path, file name, or stem)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = list_images(root)
        self.by_rel = {p.relative_to(root).as_posix(): p for p in self.files}
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for p in self.files:
            self.by_name[p.name].append(p)
            self.by_stem[p.stem].append(p)

    def find(self, name: str) -> Path | None:
        name = name.replace("\\", "/").lstrip("./") if name else ""
        if name in self.by_rel:
            return self.by_rel[name]
        for key in (name, Path(name).name):
            hits = self.by_name.get(key)
            if hits:
                return hits[0]
        return None

    def find_stem(self, stem: str) -> Path | None:
        hits = self.by_stem.get(stem)
        return hits[0] if hits else None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _read_text(path: Path, cap: int) -> str:
    if path.stat().st_size > cap:
        raise AnnotationError(f"{path.name}: annotation file too large (over {cap >> 20} MB).")
    return path.read_text(encoding="utf-8-sig", errors="replace")


# --- COCO ----------------------------------------------------------------------------------------------------------

def looks_like_coco(path: Path) -> bool:
    """A .json file with `images` and `annotations` lists (read only when small enough)."""
    try:
        if path.suffix.lower() != ".json" or path.stat().st_size > MAX_ANNOTATION_BYTES:
            return False
        data = json.loads(_read_text(path, MAX_ANNOTATION_BYTES))
    except (OSError, ValueError, AnnotationError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data


def parse_coco(path: Path, images_dir: Path) -> Parsed:
    """COCO detection JSON: `bbox` = [x, y, width, height] in pixels; category ids mapped by `categories`."""
    try:
        data = json.loads(_read_text(path, MAX_ANNOTATION_BYTES))
    except ValueError as err:
        raise AnnotationError(f"{path.name}: not valid JSON ({err}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(f"{path.name}: not a COCO file (no 'images' list).")
    problems: list[Problem] = []
    cats = {}
    for c in data.get("categories") or []:
        if isinstance(c, dict) and "id" in c:
            cats[c["id"]] = str(c.get("name") or c["id"])
    index = _ImageIndex(images_dir)
    by_id: dict[object, ImageAnn] = {}
    listed: set[Path] = set()
    out: list[ImageAnn] = []
    for row in data["images"]:
        if not isinstance(row, dict) or "id" not in row:
            problems.append(Problem("bad_annotation", "warning", f"{path.name}: an image entry without an id was "
                                    "ignored.", path.name))
            continue
        file_name = str(row.get("file_name", ""))
        found = index.find(file_name)
        ann = ImageAnn(index.rel(found) if found else file_name, str(found) if found else "",
                       width=_int_or_none(row.get("width")), height=_int_or_none(row.get("height")))
        if found:
            listed.add(found)
        by_id[row["id"]] = ann
        out.append(ann)
    for a in data.get("annotations") or []:
        if not isinstance(a, dict):
            continue
        img = by_id.get(a.get("image_id"))
        if img is None:
            problems.append(Problem("unknown_image", "warning", f"{path.name}: annotation {a.get('id')} names image "
                                    f"id {a.get('image_id')}, which is not in 'images'; dropped.", path.name))
            continue
        if a.get("category_id") not in cats:
            problems.append(Problem("unknown_class", "warning", f"{img.name}: box with unknown class id "
                                    f"{a.get('category_id')} (not in 'categories'); dropped.", img.name))
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            problems.append(Problem("bad_box", "warning", f"{img.name}: a box is not [x, y, w, h]; dropped.",
                                    img.name))
            continue
        x, y, w, h = (float(v) for v in bbox)
        img.boxes.append([x, y, x + w, y + h])
        img.labels.append(cats[a["category_id"]])
    for p in index.files:
        if p not in listed:
            problems.append(Problem("not_annotated", "info", f"{index.rel(p)}: not listed in {path.name}; left out.",
                                    index.rel(p)))
    classes = [cats[k] for k in sorted(cats, key=lambda k: (str(type(k)), k))]
    return Parsed("coco", str(path), list(dict.fromkeys(classes)), out, problems)


def _int_or_none(v: object) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


# --- Pascal VOC ----------------------------------------------------------------------------------------------------

def _xml_root(path: Path) -> ET.Element:
    text = _read_text(path, MAX_XML_BYTES)
    if not text.strip():
        raise AnnotationError(f"{path.name} is empty ({path.stat().st_size} bytes)")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise AnnotationError(f"{path.name}: XML with a DOCTYPE or entities is refused")
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        raise AnnotationError(f"{path.name} is not valid XML ({err})") from None


def parse_voc(xml_dir: Path, images_dir: Path) -> Parsed:
    """One Pascal VOC XML per image (`filename`, `size`, `object/name`, `object/bndbox`). Images without an XML file
    count as negatives (no objects); an image whose XML cannot be read is left out (its boxes are unknown)."""
    problems: list[Problem] = []
    index = _ImageIndex(images_dir)
    seen: set[Path] = set()
    out: list[ImageAnn] = []
    classes: list[str] = []
    for xml in sorted(p for p in xml_dir.rglob("*.xml") if not _is_junk(p.relative_to(xml_dir))):
        try:
            root = _xml_root(xml)
        except (AnnotationError, OSError) as err:
            photo = index.find_stem(xml.stem)
            if photo is not None:  # not a negative: its boxes are unknown
                seen.add(photo)
            left = f"{index.rel(photo)} is left out (its boxes are unknown): fix the file and import again" \
                if photo is not None else "ignored"
            problems.append(Problem("bad_annotation", "warning", f"{str(err).rstrip('.')}; {left}.", xml.name))
            continue
        if root.tag != "annotation":
            continue
        fname = (root.findtext("filename") or "").strip()
        found = index.find(fname) if fname else None
        found = found or index.find_stem(xml.stem)
        if found is None:
            problems.append(Problem("missing_image", "warning", f"{xml.name}: its image "
                                    f"'{fname or xml.stem}' is not there; ignored.", xml.name))
            continue
        if found in seen:
            problems.append(Problem("bad_annotation", "warning", f"{xml.name}: a second annotation file for "
                                    f"{index.rel(found)}; ignored.", xml.name))
            continue
        seen.add(found)
        ann = ImageAnn(index.rel(found), str(found), width=_int_or_none(root.findtext("size/width")),
                       height=_int_or_none(root.findtext("size/height")))
        for obj in root.findall("object"):
            name = (obj.findtext("name") or "").strip()
            try:
                box = [float(obj.findtext(f"bndbox/{k}") or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                box = [math.nan] * 4
            if not name or not all(math.isfinite(v) for v in box):
                problems.append(Problem("bad_box", "warning", f"{xml.name}: an object without a name or a numeric "
                                        "bndbox; dropped.", index.rel(found)))
                continue
            ann.boxes.append(box)
            ann.labels.append(name)
            if name not in classes:
                classes.append(name)
        out.append(ann)
    for p in index.files:
        if p not in seen:
            out.append(ImageAnn(index.rel(p), str(p)))
            problems.append(Problem("no_annotation_file", "warning", f"{index.rel(p)}: no XML file, so it counts "
                                    "as a photo with nothing to find.", index.rel(p)))
    return Parsed("voc", str(xml_dir), sorted(classes), out, problems)


# --- YOLO ----------------------------------------------------------------------------------------------------------

def _yolo_names(folder: Path) -> list[str] | None:
    for name in ("classes.txt", "obj.names", "classes.names", "names.txt"):
        for p in (folder / name, folder.parent / name):
            if p.is_file():
                return [ln.strip() for ln in _read_text(p, MAX_XML_BYTES).splitlines() if ln.strip()]
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        for p in (folder / name, folder.parent / name):
            if p.is_file():
                return _yaml_names(_read_text(p, MAX_XML_BYTES))
    return None


def _yaml_names(text: str) -> list[str] | None:
    """`names:` of a YOLO data.yaml: a [list], a block list, or a block {index: name} map (no YAML library)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.startswith("names:"):
            continue
        rest = stripped[len("names:"):].strip()
        if rest.startswith("["):
            return [n.strip().strip("'\"") for n in rest.strip("[]").split(",") if n.strip()]
        names: dict[int, str] = {}
        for j, sub in enumerate(lines[i + 1:]):
            s = sub.split("#", 1)[0].strip()
            if not s:
                continue
            if not sub.startswith((" ", "\t")):
                break
            if s.startswith("- "):
                names[len(names)] = s[2:].strip().strip("'\"")
            elif ":" in s:
                k, v = s.split(":", 1)
                names[int(k) if k.strip().isdigit() else j] = v.strip().strip("'\"")
        return [names[k] for k in sorted(names)] or None
    return None


def parse_yolo(label_dir: Path, images_dir: Path, names: Sequence[str] | None = None) -> Parsed:
    """YOLO txt: one file per image (same stem), lines `class cx cy w h` normalised to 0..1. Class names from
    classes.txt / obj.names / data.yaml next to the labels (else class_0, class_1 …). Images without a label file
    are negatives (the YOLO convention)."""
    problems: list[Problem] = []
    names = list(names) if names else _yolo_names(label_dir) or _yolo_names(images_dir)
    if not names:
        problems.append(Problem("no_class_names", "info", "No classes.txt / data.yaml found: classes are named "
                                "class_0, class_1 …", str(label_dir)))
    index = _ImageIndex(images_dir)
    texts = {p.stem: p for p in sorted(label_dir.rglob("*.txt")) if not _is_junk(p.relative_to(label_dir))
             and p.name not in ("classes.txt", "names.txt")}
    out: list[ImageAnn] = []
    used: set[str] = set()
    max_id = -1
    raw: list[tuple[ImageAnn, list[tuple[int, float, float, float, float]]]] = []
    for p in index.files:
        ann = ImageAnn(index.rel(p), str(p))
        rows: list[tuple[int, float, float, float, float]] = []
        txt = texts.get(p.stem)
        if txt is None:
            problems.append(Problem("no_annotation_file", "warning", f"{ann.name}: no .txt label file, so it counts "
                                    "as a photo with nothing to find (the YOLO rule).", ann.name))
        else:
            used.add(p.stem)
            for n, line in enumerate(_read_text(txt, MAX_XML_BYTES).splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    cls = int(float(parts[0]))
                    cx, cy, w, h = (float(v) for v in parts[1:5])
                    if len(parts) < 5:
                        raise ValueError
                except ValueError:
                    problems.append(Problem("bad_box", "warning", f"{txt.name} line {n}: not 'class cx cy w h'; "
                                            "dropped.", ann.name))
                    continue
                rows.append((cls, cx, cy, w, h))
                max_id = max(max_id, cls)
        raw.append((ann, rows))
        out.append(ann)
    if not names:
        names = [f"class_{i}" for i in range(max_id + 1)]
    for ann, rows in raw:
        for cls, cx, cy, w, h in rows:
            if not 0 <= cls < len(names):
                problems.append(Problem("unknown_class", "warning", f"{ann.name}: box with unknown class id {cls} "
                                        f"(there are {len(names)} class names); dropped.", ann.name))
                continue
            ann.boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])  # normalised; scaled after decoding
            ann.labels.append(names[cls])
    for stem, txt in texts.items():
        if stem not in used:
            problems.append(Problem("missing_image", "warning", f"{txt.name}: no image with this name; ignored.",
                                    txt.name))
    for ann in out:
        ann.width = ann.height = -1  # marks normalised boxes
    return Parsed("yolo", str(label_dir), list(names), out, problems)


# --- auto-detection ------------------------------------------------------------------------------------------------

def _xml_dirs(folder: Path) -> list[Path]:
    found = []
    for cand in (folder / "Annotations", folder / "annotations", folder / "annotations_voc", folder / "xml",
                 folder / "labels", folder):
        if cand.is_dir() and any(cand.glob("*.xml")):
            found.append(cand)
    if not found:
        found = sorted({p.parent for p in folder.rglob("*.xml") if not _is_junk(p.relative_to(folder))})
    return found


def _yolo_dirs(folder: Path, images: Path) -> list[Path]:
    found = []
    for cand in (folder / "labels", images.parent / "labels", images, folder):
        if cand.is_dir() and any(p.name not in ("classes.txt", "names.txt") for p in cand.rglob("*.txt")):
            found.append(cand)
    return found


def find_annotations(folder: Path) -> tuple[str, Path] | None:
    """The annotations in a folder, by the first format found: a COCO .json (top level or annotations/), Pascal VOC
    .xml files, YOLO .txt files. None when there are none."""
    jsons = sorted(folder.glob("*.json")) + sorted((folder / "annotations").glob("*.json"))
    for j in jsons:
        if looks_like_coco(j):
            return "coco", j
    xmls = _xml_dirs(folder)
    if xmls:
        return "voc", xmls[0]
    yolos = _yolo_dirs(folder, image_root(folder))
    if yolos:
        return "yolo", yolos[0]
    return None


def detect_format(path: Path) -> str:
    """The format of an annotation file or folder given by the user."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() == ".xml":
            return "voc"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise AnnotationError(f"{path.name}: unknown annotation file (use a COCO .json, a folder of VOC .xml or a "
                              "folder of YOLO .txt files).")
    if path.is_dir():
        if any(path.rglob("*.xml")):
            return "voc"
        if any(path.rglob("*.txt")):
            return "yolo"
    raise AnnotationError(f"{path}: no annotations there (COCO .json, VOC .xml or YOLO .txt).")


def broken_coco(folder: Path) -> str | None:
    """Why a .json file meant as COCO annotations (top level or annotations/) cannot be read: empty, not JSON, or
    without the 'images' list; None when there is no such file."""
    for path in sorted(folder.glob("*.json")) + sorted((folder / "annotations").glob("*.json")):
        try:
            text = _read_text(path, MAX_ANNOTATION_BYTES)
        except (OSError, AnnotationError) as err:
            return f"{path.name} cannot be read ({err})."
        if not text.strip():
            return (f"{path.name} is empty ({path.stat().st_size} bytes), so no box could be read. Put the COCO "
                    "annotations in it, or leave it out to import the photos without boxes.")
        try:
            data = json.loads(text)
        except ValueError as err:
            return f"{path.name} is not valid JSON ({err}), so no box could be read. Fix it and import again."
        if isinstance(data, dict) and "annotations" in data:
            return (f"{path.name} has 'annotations' but no 'images' list, so no box could be placed on a photo "
                    "(COCO needs both).")
    return None


def parse_folder(folder: str | Path, annotations: str | Path | None = None) -> Parsed:
    """Images of `folder` (in it or in images/) with their annotations, found automatically or named."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: no such folder.")
    images = image_root(folder)
    if annotations is not None:
        ann = Path(annotations)
        if not ann.exists():
            raise AnnotationError(f"{ann}: no such annotation file or folder.")
        fmt = detect_format(ann)
        if fmt == "coco":
            parsed = parse_coco(ann, images)
        elif fmt == "voc":
            parsed = parse_voc(ann.parent if ann.is_file() else ann, images)
        else:
            names = _yaml_names(_read_text(ann, MAX_XML_BYTES)) if ann.is_file() else None
            parsed = parse_yolo(ann.parent if ann.is_file() else ann, images, names)
        return parsed
    found = find_annotations(folder)
    if found is None:
        broken = broken_coco(folder)
        if broken:
            raise AnnotationError(broken)
        files = list_images(images)
        if not files:
            raise AnnotationError(f"{folder}: no images and no annotations found.")
        parsed = Parsed("none", "", [], [ImageAnn(p.relative_to(images).as_posix(), str(p)) for p in files])
        parsed.problems.append(Problem("no_annotations", "warning", "No annotations found (COCO .json, VOC .xml or "
                                       "YOLO .txt): every image has no boxes yet.", str(folder)))
        return parsed
    fmt, where = found
    if fmt == "coco":
        return parse_coco(where, images)
    if fmt == "voc":
        return parse_voc(where, images)
    return parse_yolo(where, images)


# --- checks: decode, clip, duplicates ------------------------------------------------------------------------------

@dataclass
class DetectionSet:
    """Images with checked boxes (pixels, clipped), class names, split and the problems found."""

    format: str
    source: str
    classes: list[str]
    images: list[ImageAnn]
    problems: list[Problem]
    split: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": self.format, "source": self.source, "classes": list(self.classes),
                "images": [asdict(i) for i in self.images], "problems": [p.to_dict() for p in self.problems],
                "split": dict(self.split)}

    @classmethod
    def from_dict(cls, d: dict) -> DetectionSet:
        return cls(str(d.get("format", "")), str(d.get("source", "")), [str(c) for c in d.get("classes", [])],
                   [ImageAnn(**i) for i in d.get("images", [])], [Problem(**p) for p in d.get("problems", [])],
                   dict(d.get("split") or {}))


def clip_boxes(ann: ImageAnn, width: int, height: int, problems: list[Problem], min_side: float = 1.0) -> None:
    """Clip `ann`'s boxes to the image; drop those of zero area (or under `min_side` px) or reversed, saying so."""
    keep_b, keep_l = [], []
    clipped = 0
    for box, label in zip(ann.boxes, ann.labels, strict=True):
        x1, y1, x2, y2 = box
        if not all(math.isfinite(v) for v in box) or x2 <= x1 or y2 <= y1:
            problems.append(Problem("zero_area", "warning", f"{ann.name}: box {_fmt(box)} ({label}) has zero or "
                                    "negative size; dropped.", ann.name))
            continue
        c = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width),
             min(max(y2, 0.0), height)]
        if c[2] - c[0] < min_side or c[3] - c[1] < min_side:
            problems.append(Problem("outside", "warning", f"{ann.name}: box {_fmt(box)} ({label}) lies outside the "
                                    f"{width}×{height} image; dropped.", ann.name))
            continue
        if c != [float(v) for v in box]:
            clipped += 1
        keep_b.append(c)
        keep_l.append(label)
    if clipped:
        problems.append(Problem("clipped", "info", f"{ann.name}: {clipped} box(es) went past the image edge; "
                                "clipped to the image.", ann.name))
    ann.boxes, ann.labels = keep_b, keep_l


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def check(parsed: Parsed, workers: int | None = None) -> DetectionSet:
    """Decode every image (worker processes, with timeouts), check boxes against its size, find duplicates."""
    from core.data.images import ImageInfo, check_images

    problems = list(parsed.problems)
    present = [a for a in parsed.images if a.path]
    for a in parsed.images:
        if not a.path:
            problems.append(Problem("missing_image", "warning", f"{a.name}: named in the annotations but not found; "
                                    f"{len(a.boxes)} box(es) ignored.", a.name))
    infos = dict(check_images([a.path for a in present], workers=0 if len(present) <= 8 else workers))
    images: list[ImageAnn] = []
    for a in present:
        info = infos.get(Path(a.path))
        if not isinstance(info, ImageInfo):
            reason = getattr(info, "reason", "could not be read")
            problems.append(Problem("unreadable", "warning", f"{a.name}: the image cannot be decoded ({reason}); "
                                    "left out.", a.name))
            continue
        if a.width == -1:  # YOLO: normalised boxes
            a.boxes = [[b[0] * info.width, b[1] * info.height, b[2] * info.width, b[3] * info.height]
                       for b in a.boxes]
        elif a.width and a.height and (a.width, a.height) != (info.width, info.height):
            problems.append(Problem("size_mismatch", "info", f"{a.name}: the annotation says {a.width}×{a.height}, "
                                    f"the image is {info.width}×{info.height}; boxes checked against the image.",
                                    a.name))
        a.width, a.height, a.sha256 = info.width, info.height, info.sha256
        clip_boxes(a, info.width, info.height, problems)
        images.append(a)
    problems += lost_all_boxes(images, problems)
    used = [c for c in parsed.classes if any(c in a.labels for a in images)] or list(parsed.classes)
    extra = sorted({lbl for a in images for lbl in a.labels} - set(used))
    classes = used + extra
    return DetectionSet(parsed.format, parsed.source, classes, images, problems)


DROPPED = ("outside", "zero_area", "unknown_class", "bad_box")  # kinds of problems that drop a box of an image


def lost_all_boxes(images: Iterable[ImageAnn], problems: Sequence[Problem]) -> list[Problem]:
    """A warning for each image left without a box because every box it had was dropped: it now teaches the model
    that there is nothing to find there."""
    dropped = {p.file for p in problems if p.kind in DROPPED}
    return [Problem("boxes_lost", "warning", f"{a.name}: none of its boxes could be used, so it now counts as a "
                    "photo with nothing to find. Draw its boxes ('Draw boxes'), or fix the annotations and import "
                    "again.", a.name) for a in images if not a.boxes and a.name in dropped]


def duplicates(images: Iterable[ImageAnn]) -> list[list[ImageAnn]]:
    """Groups of byte-identical images (same sha256)."""
    groups: dict[str, list[ImageAnn]] = defaultdict(list)
    for a in images:
        if a.sha256:
            groups[a.sha256].append(a)
    return [g for g in groups.values() if len(g) > 1]


def _unit(seed: int, key: str) -> float:
    """A number in [0, 1) that depends only on (seed, key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(ds: DetectionSet, seed: int = 0, val_fraction: float = 0.2) -> DetectionSet:
    """Keep the data's own split when every image has one; else a seeded split (about `val_fraction` of the
    images to val, at least one; byte-identical images stay together). Duplicates across given splits are named."""
    problems = [p for p in ds.problems if p.kind != "duplicate_across_splits"]
    given = all(a.split in ("train", "val") for a in ds.images) and any(a.split == "val" for a in ds.images)
    if given:
        mode = "given"
    else:
        mode = "seeded"
        keys = sorted({a.sha256 or a.name for a in ds.images})
        draw = {k: _unit(seed, k) for k in keys}  # per image, so adding images moves no other image
        val = {k for k in keys if draw[k] < val_fraction}
        if not val and len(keys) > 1:
            val = {min(keys, key=draw.get)}
        if len(val) == len(keys) and len(keys) > 1:
            val.discard(max(keys, key=draw.get))
        for a in ds.images:
            a.split = "val" if (a.sha256 or a.name) in val else "train"
    for group in duplicates(ds.images):
        splits = {a.split for a in group}
        if len(splits) > 1:
            names = ", ".join(a.name for a in group)
            problems.append(Problem("duplicate_across_splits", "warning", f"The same image is in train and val: "
                                    f"{names}. The val score is flattered; remove one copy.", group[0].name))
        else:
            names = ", ".join(a.name for a in group)
            problems.append(Problem("duplicate", "info", f"Identical images: {names}.", group[0].name))
    problems = list(dict.fromkeys(problems))
    return replace(ds, problems=problems, split={"mode": mode, "seed": seed, "val_fraction": val_fraction})


def load_folder(folder: str | Path, annotations: str | Path | None = None, seed: int = 0,
                val_fraction: float = 0.2, workers: int | None = None) -> DetectionSet:
    """Parse, check and split a folder of images with annotations (what the CLI and resolve_data use)."""
    return assign_splits(check(parse_folder(folder, annotations), workers), seed, val_fraction)


# --- the validation report -----------------------------------------------------------------------------------------

def summary(ds: DetectionSet) -> dict:
    """Counts for the report: images and boxes per split, boxes per class, boxes per image, box sizes, problems."""
    per_class = Counter(lbl for a in ds.images for lbl in a.labels)
    per_split = Counter(a.split or "train" for a in ds.images)
    boxes_split = Counter()
    for a in ds.images:
        boxes_split[a.split or "train"] += len(a.boxes)
    sizes = [{"class": lbl, "width": b[2] - b[0], "height": b[3] - b[1],
              "relative_area": (b[2] - b[0]) * (b[3] - b[1]) / max(1, (a.width or 1) * (a.height or 1))}
             for a in ds.images for b, lbl in zip(a.boxes, a.labels, strict=True)]
    kinds = Counter(p.kind for p in ds.problems)
    blocking = []
    train = [a for a in ds.images if a.split == "train"]
    if not any(a.boxes for a in train):
        blocking.append("No training image has a box: draw or import boxes first.")
    if not any(a.split == "val" for a in ds.images):
        blocking.append("No validation images: add more images.")
    return {"format": ds.format, "n_images": len(ds.images), "n_boxes": sum(len(a.boxes) for a in ds.images),
            "n_negatives": sum(1 for a in ds.images if not a.boxes), "classes": list(ds.classes),
            "boxes_per_class": {c: per_class.get(c, 0) for c in ds.classes}, "images_per_split": dict(per_split),
            "boxes_per_split": dict(boxes_split), "boxes_per_image": [len(a.boxes) for a in ds.images],
            "box_sizes": sizes, "problem_counts": dict(kinds), "blocking": blocking, "split": ds.split}
