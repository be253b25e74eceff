"""Segmentation data: images + masks with the same file stems, as class-id PNGs or colour PNGs with a palette.

Three places data comes from, one manifest for training:

- a folder (CLI, or the app's "folder on this computer"): ``DIR/{train,val}/{images,masks}/`` or
  ``DIR/{images,masks}/``, an optional ``classes.txt`` (one name per line, line = class id; or ``R G B name`` lines
  for colour masks);
- a dataset in the app's store: images imported by ``core.data.store`` (``set_task(id, "segmentation")``), masks,
  class table, ignore value and split in side files of ``dataset_dir(id)`` (``segmentation.json`` + ``masks/``);
- the sample set made at setup (``core.tasks.segmentation.sample``).

Mask values are *codes*: the pixel value of an id mask, or ``r << 16 | g << 8 | b`` of a colour mask. The class table
maps codes to classes; the ignore code (void) and any code that is not a class become ``IGNORE`` (255) for training.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.images import ImageError, load_rgb
from core.data.names import IMAGE_EXTENSIONS

IGNORE = 255
MAX_CLASSES = 254
IMAGE_EXT = tuple(sorted(IMAGE_EXTENSIONS))  # phone photos (HEIC, AVIF) too
MASK_EXT = (".png", ".bmp", ".gif", ".tif", ".tiff")
MASK_FORMATS = ("PNG", "BMP", "GIF", "TIFF")
MASK_DIRS = ("masks", "labels", "annotations", "annots", "gt")
IMAGE_DIRS = ("images", "imgs", "photos")
VOID_NAMES = {"void", "unlabelled", "unlabeled", "ignore", "dontcare", "don't care", "no label"}
SIDE_FILE = "segmentation.json"
MASK_FOLDER = "masks"
MAX_MASK_PIXELS = 40_000_000
ProgressFn = Callable[[int, int], None]

# a palette for classes without colours (tab20-like, readable on photos)
DEFAULT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232),
                   (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
                   (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))


class SegDataError(Exception):
    """Segmentation data that cannot be used; the message names the file or class and the reason."""


def default_colour(i: int) -> tuple[int, int, int]:
    if i < len(DEFAULT_COLOURS):
        return DEFAULT_COLOURS[i]
    rng = random.Random(i)
    return (rng.randrange(40, 256), rng.randrange(40, 256), rng.randrange(40, 256))


def pack(rgb: tuple[int, int, int] | list[int]) -> int:
    r, g, b = (int(v) for v in rgb)
    return (r << 16) | (g << 8) | b


def unpack(code: int) -> tuple[int, int, int]:
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


@dataclass(frozen=True)
class ClassTable:
    """Classes in id order: their names, the mask code of each, display colours, the ignore code and mask kind."""

    names: tuple[str, ...]
    codes: tuple[int, ...]
    colours: tuple[tuple[int, int, int], ...]
    ignore: int | None = None
    kind: str = "ids"  # ids | colour

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.codes) == len(self.colours):
            raise SegDataError("the class table is inconsistent (names, codes and colours differ in number)")
        if len(self.names) < 1:
            raise SegDataError("there are no classes: give a classes.txt or masks with class values")
        if len(self.names) > MAX_CLASSES:
            raise SegDataError(f"{len(self.names)} classes; at most {MAX_CLASSES} are supported")
        if len(set(self.codes)) != len(self.codes):
            raise SegDataError("two classes share one mask value")
        if self.ignore is not None and self.ignore in self.codes:
            raise SegDataError(f"the ignore value {self.ignore} is also a class")

    def lut(self) -> np.ndarray | None:
        """code → train id for id masks (values < 65536), IGNORE elsewhere; None for colour masks."""
        if self.kind != "ids":
            return None
        top = max([*self.codes, self.ignore or 0, 255]) + 1
        table = np.full(top, IGNORE, dtype=np.uint8)
        for i, code in enumerate(self.codes):
            table[code] = i
        return table

    def to_dict(self) -> dict:
        return {"names": list(self.names), "codes": list(self.codes), "colours": [list(c) for c in self.colours],
                "ignore": self.ignore, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> ClassTable:
        return cls(tuple(str(n) for n in d["names"]), tuple(int(c) for c in d["codes"]),
                   tuple(tuple(int(v) for v in c) for c in d["colours"]), d.get("ignore"), d.get("kind", "ids"))


# --- reading masks -------------------------------------------------------------------------------------------------

def _open_mask(source: str | Path | bytes) -> Image.Image:
    import io

    if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) == 0:
        raise SegDataError("the mask file is empty (0 bytes)")
    fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115 - closed below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=MASK_FORMATS)
        if im.width * im.height > MAX_MASK_PIXELS:
            raise SegDataError(f"the mask is too large ({im.width}×{im.height})")
        im.seek(0)
        im.load()
        return im
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise SegDataError("the mask is not a lossless image (PNG, BMP, GIF or TIFF)") from None
    except (OSError, EOFError, SyntaxError, ValueError) as err:
        raise SegDataError(f"the mask cannot be read ({type(err).__name__}: {str(err)[:80]})") from None
    finally:
        fp.close()


def read_codes(source: str | Path | bytes) -> tuple[np.ndarray, str, list | None]:
    """A mask's codes (H, W int32), its kind ('ids' or 'colour') and its PNG palette (for P-mode masks), or raise
    SegDataError. P, L, 1 and 16-bit masks are ids; RGB(A) masks are ids when grey (r = g = b), colours otherwise."""
    im = _open_mask(source)
    palette = None
    if im.mode == "P":
        raw = im.getpalette() or []
        palette = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
        arr = np.asarray(im, dtype=np.int32)
        return arr, "ids", palette
    if im.mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.int32), "ids", None
    if im.mode.startswith("I"):
        return np.asarray(im, dtype=np.int32), "ids", None
    rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy(), "ids", None
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], "colour", None


def to_train_ids(codes: np.ndarray, table: ClassTable, kind: str | None = None) -> np.ndarray:
    """Codes → train ids (uint8: class index, IGNORE for the ignore value and unknown values)."""
    kind = kind or table.kind
    if kind == "ids" and table.kind == "ids":
        lut = table.lut()
        clipped = np.where((codes >= 0) & (codes < len(lut)), codes, 0)
        out = lut[clipped]
        out[(codes < 0) | (codes >= len(lut))] = IGNORE
        return out
    if kind != table.kind:
        raise SegDataError(f"a {kind} mask where {table.kind} masks are expected")
    values, inverse = np.unique(codes, return_inverse=True)
    index = {c: i for i, c in enumerate(table.codes)}
    mapped = np.array([index.get(int(v), IGNORE) for v in values], dtype=np.uint8)
    return mapped[inverse.reshape(codes.shape)]


def unknown_colours(codes: np.ndarray, train: np.ndarray, table: ClassTable) -> str:
    """'' or a sentence naming the colours of a colour mask that are no class (they are ignored), for people."""
    stray = (train == IGNORE) & (codes != (table.ignore if table.ignore is not None else -1))
    if not stray.any():
        return ""
    found = sorted(int(v) for v in np.unique(codes[stray]))
    shown = ", ".join("rgb({}, {}, {})".format(*unpack(v)) for v in found[:6]) + (" …" if len(found) > 6 else "")
    return (f"mask colours that are not a known class: {shown} ({int(stray.sum())} pixels, ignored). Add them to "
            "classes.txt and import again, or paint over them.")


def load_mask(source: str | Path | bytes, table: ClassTable) -> np.ndarray:
    """The train-id mask (H, W uint8) of a mask file, or raise SegDataError."""
    codes, kind, _ = read_codes(source)
    if kind != table.kind:
        raise SegDataError(f"a {kind} mask where {table.kind} masks are expected")
    return to_train_ids(codes, table)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a mask to (width, height) with nearest-neighbour only: class ids are never blended."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    mode = "I" if mask.dtype != np.uint8 else "L"
    im = Image.fromarray(mask.astype(np.int32) if mode == "I" else mask, mode)
    return np.asarray(im.resize(tuple(size), Image.Resampling.NEAREST)).astype(mask.dtype)


def write_mask_png(mask: np.ndarray, path: Path | None = None, palette: Iterable[tuple[int, int, int]] = ()) -> bytes:
    """An 8-bit id mask as PNG bytes (P mode with the class colours when given, so viewers show colours while the
    pixel values stay the class ids); written to `path` when given."""
    import io

    if mask.max(initial=0) > 255:
        raise SegDataError("mask values above 255 cannot be stored in an 8-bit PNG")
    colours = list(palette)
    im = Image.fromarray(mask.astype(np.uint8), "L")
    if colours:
        flat = [0] * 768
        for i, c in enumerate(colours[:256]):
            flat[3 * i:3 * i + 3] = list(c)
        im = im.convert("P")
        im.putpalette(flat)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = buf.getvalue()
    if path is not None:
        from core.storage import write_bytes_atomic

        write_bytes_atomic(Path(path), data)
    return data


# --- class tables ----------------------------------------------------------------------------------------------------

_COLOUR_LINE = re.compile(r"^\s*(\d{1,3})[\s,;]+(\d{1,3})[\s,;]+(\d{1,3})[\s,;:]+(.+?)\s*$")
_ID_LINE = re.compile(r"^\s*(\d{1,5})[\s,;:]+(.+?)\s*$")


def read_classes_file(path: Path) -> list[tuple[int | None, str, tuple[int, int, int] | None]]:
    """classes.txt lines: ``name`` (id = line number), ``id name`` or ``R G B name`` (colour masks)."""
    rows = []
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
             and not ln.lstrip().startswith("#")]
    colour = sum(bool(_COLOUR_LINE.match(ln)) for ln in lines) == len(lines) and lines
    for i, line in enumerate(lines):
        if colour:
            m = _COLOUR_LINE.match(line)
            rgb = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            if max(rgb) > 255:
                raise SegDataError(f"{path.name}, line {i + 1}: a colour value is above 255")
            rows.append((None, m.group(4)[:100], rgb))
            continue
        m = _ID_LINE.match(line)
        if m and not line.strip().isdigit():
            rows.append((int(m.group(1)), m.group(2)[:100], None))
        else:
            rows.append((i, line.strip()[:100], None))
    return rows


def table_from(values: Iterable[int], kind: str, classes_file: Path | None = None, ignore: int | None = None,
               palette: list | None = None) -> tuple[ClassTable, list[str]]:
    """A class table for masks whose codes are `values`, named from classes.txt when there is one; with notes."""
    notes: list[str] = []
    seen = sorted(set(int(v) for v in values))
    rows = read_classes_file(classes_file) if classes_file and classes_file.is_file() else []
    names: list[str]
    codes: list[int]
    colours: list[tuple[int, int, int]]
    if rows and rows[0][2] is not None:  # colour classes.txt
        names = [r[1] for r in rows]
        codes = [pack(r[2]) for r in rows]
        colours = [r[2] for r in rows]
        kind = "colour"
    elif rows:
        names = [r[1] for r in rows]
        codes = [int(r[0]) for r in rows]
        colours = [palette[c] if palette and c < len(palette) and any(palette[c]) else default_colour(i)
                   for i, c in enumerate(codes)]
    elif kind == "colour":
        codes = seen
        colours = [unpack(c) for c in codes]
        names = [f"colour {r},{g},{b}" for r, g, b in colours]
        notes.append(f"Found {len(codes)} colours in the masks; name the classes in the class table.")
    else:
        codes = [c for c in seen if c != 255 or ignore == 255] if 255 in seen and ignore is None else seen
        if 255 in seen and ignore is None and len(seen) > 1:
            ignore = 255
            notes.append("Mask value 255 is not a class: it is treated as 'ignore' (void), as is usual.")
            codes = [c for c in seen if c != 255]
        names = [f"class {c}" for c in codes]
        colours = [palette[c] if palette and c < len(palette) and any(palette[c]) else default_colour(i)
                   for i, c in enumerate(codes)]
    if ignore is None:
        void = [i for i, n in enumerate(names) if n.strip().lower() in VOID_NAMES]
        if len(void) == 1:
            ignore = codes[void[0]]
            what = "colour {},{},{}".format(*unpack(ignore)) if kind == "colour" else f"value {ignore}"
            notes.append(f"The class '{names[void[0]]}' ({what}) is treated as 'ignore' (void).")
    if ignore is not None and ignore in codes:
        i = codes.index(ignore)
        names, codes, colours = names[:i] + names[i + 1:], codes[:i] + codes[i + 1:], colours[:i] + colours[i + 1:]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SegDataError(f"class names must be unique; repeated: {', '.join(dup[:5])}")
    return ClassTable(tuple(names), tuple(codes), tuple(tuple(c) for c in colours), ignore, kind), notes


# --- folders -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """An image and its mask (None when missing); `name` is the display name (relative path)."""

    image: str
    mask: str | None
    split: str | None
    name: str


@dataclass
class FolderScan:
    root: Path
    pairs: list[Pair]
    extra_masks: list[str]
    classes_file: Path | None
    layout: str
    notes: list[str] = field(default_factory=list)


def _files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts
                  and not p.name.startswith("."))


def _sub(folder: Path, names: tuple[str, ...]) -> Path | None:
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def _pair_folder(images: Path, masks: Path | None, split: str | None, root: Path
                 ) -> tuple[list[Pair], list[str], list[str]]:
    notes: list[str] = []
    by_stem: dict[str, Path] = {}
    for p in _files(images, IMAGE_EXT):
        if p.stem in by_stem:
            notes.append(f"{p.relative_to(root)}: another image has the same name ({by_stem[p.stem].name}); "
                         "only the first is used.")
            continue
        by_stem[p.stem] = p
    masks_by_stem = {p.stem: p for p in _files(masks, MASK_EXT)} if masks else {}
    pairs = [Pair(str(p), str(masks_by_stem[s]) if s in masks_by_stem else None, split, str(p.relative_to(root)))
             for s, p in by_stem.items()]
    extra = [str(m.relative_to(root)) for s, m in masks_by_stem.items() if s not in by_stem]
    return pairs, extra, notes


def scan_folder(folder: str | Path, shown: str | None = None) -> FolderScan:
    """Find image/mask pairs: ``train/`` and ``val/`` each with images/ + masks/, or images/ + masks/.

    ``shown`` is the name the user knows the folder by (a zip's or an upload's name), used in messages instead of a
    temporary folder's name."""
    root = Path(folder).expanduser()
    label = shown or root.name or str(root)
    if not root.is_dir():
        raise SegDataError(f"{shown or folder} is not a folder")
    pairs: list[Pair] = []
    extra: list[str] = []
    notes: list[str] = []
    folders: list[tuple[Path, Path | None]] = []  # (images/, masks/ beside it)
    splits = [(s, root / s) for s in ("train", "val") if (root / s).is_dir()]
    if splits and any(_sub(d, IMAGE_DIRS) for _, d in splits):
        layout = "train/val"
        for split, d in splits:
            images = _sub(d, IMAGE_DIRS)
            if images is None:
                notes.append(f"{split}/ has no images/ folder; it is skipped.")
                continue
            folders.append((images, _sub(d, MASK_DIRS)))
            p, e, n = _pair_folder(images, folders[-1][1], split, root)
            pairs += p
            extra += e
            notes += n
    elif _sub(root, IMAGE_DIRS):
        layout = "images/masks"
        folders.append((_sub(root, IMAGE_DIRS), _sub(root, MASK_DIRS)))
        p, e, n = _pair_folder(*folders[0], None, root)
        pairs, extra, notes = p, e, n
    else:
        raise SegDataError(f"{label} has no images/ folder (expected images/ + masks/, or train/ and "
                           "val/ each holding images/ and masks/)")
    if not pairs:
        raise SegDataError(f"{label} holds no images")
    classes_file = next((c / "classes.txt" for c in (root, root.parent) if (c / "classes.txt").is_file()), None)
    if classes_file is None and not any(p.mask for p in pairs):
        raise SegDataError(_no_masks_message(label, root, folders, pairs))
    return FolderScan(root, pairs, extra, classes_file, layout, notes)


def _no_masks_message(label: str, root: Path, folders: list[tuple[Path, Path | None]], pairs: list[Pair]) -> str:
    """Why a folder with images has not one mask: no masks/ folder beside images/, or no mask named like an image.
    (With a classes.txt the images can still be imported, to paint their masks in the app.)"""
    images, masks = next(((i, m) for i, m in folders if m is not None), folders[0])
    if masks is None:
        return (f"{label} has no masks/ folder: put one beside {images.relative_to(root).as_posix()}/ holding a mask "
                "PNG named like each image (expected images/ + masks/, or train/ and val/ each holding images/ and "
                "masks/)")
    example = Path(pairs[0].name)
    return (f"{label}: none of the {len(pairs)} images has a mask in {masks.relative_to(root).as_posix()}/ (a mask is "
            f"a PNG named like its image: {example.stem}.png for {example.name})")


# --- validation ------------------------------------------------------------------------------------------------------

@dataclass
class Problem:
    kind: str  # missing_mask | extra_mask | size_mismatch | unknown_values | unreadable_image | unreadable_mask
    file: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegReport:
    """What validation found: problems by file, class pixel shares, images per class, counts per split."""

    classes: list[str]
    problems: list[Problem]
    class_pixels: dict[str, int]
    class_images: dict[str, int]
    ignored_pixels: int
    unknown_pixels: int
    splits: dict[str, int]
    sizes: dict[str, tuple[int, int]]  # pair name -> image (w, h)
    usable: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        return not self.usable

    def by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p)
        return out

    def to_dict(self) -> dict:
        total = sum(self.class_pixels.values()) or 1
        return {"classes": self.classes, "problems": [p.to_dict() for p in self.problems],
                "class_pixels": self.class_pixels, "class_share": {k: v / total for k, v in self.class_pixels.items()},
                "class_images": self.class_images, "ignored_pixels": self.ignored_pixels,
                "unknown_pixels": self.unknown_pixels, "splits": self.splits, "n_usable": len(self.usable),
                "notes": self.notes}


def _image_size(path: str) -> tuple[int, int]:
    """Decode the image fully (truncated files fail here) and return its size."""
    img = load_rgb(path)
    return img.size


def validate_pairs(pairs: list[Pair], table: ClassTable, extra_masks: Iterable[str] = (),
                   on_progress: ProgressFn | None = None,
                   image_sizes: dict[str, tuple[int, int]] | None = None) -> SegReport:
    """Decode every image and mask; name each problem by file. `image_sizes` skips decoding already-checked images
    (stored datasets)."""
    problems = [Problem("extra_mask", m, f"{m}: a mask without an image of the same name.") for m in extra_masks]
    pix = np.zeros(len(table.names) + 1, dtype=np.int64)
    imgs = np.zeros(len(table.names), dtype=np.int64)
    ignored = unknown = 0
    usable: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}
    splits: dict[str, int] = {}
    for k, pair in enumerate(pairs):
        if on_progress:
            on_progress(k, len(pairs))
        try:
            size = image_sizes[pair.image] if image_sizes and pair.image in image_sizes else _image_size(pair.image)
        except (ImageError, OSError) as err:
            reason = err.reason if isinstance(err, ImageError) else str(err)
            problems.append(Problem("unreadable_image", pair.name, f"{pair.name}: the image cannot be decoded "
                                                                   f"({reason})."))
            continue
        sizes[pair.name] = size
        if pair.mask is None:
            problems.append(Problem("missing_mask", pair.name, f"{pair.name}: no mask with the same name."))
            continue
        try:
            codes, kind, _ = read_codes(pair.mask)
        except SegDataError as err:
            problems.append(Problem("unreadable_mask", pair.name, f"{pair.name}: {err}."))
            continue
        if kind != table.kind:
            problems.append(Problem("unreadable_mask", pair.name, f"{pair.name}: its mask is a {kind} mask, the "
                                                                  f"others are {table.kind} masks."))
            continue
        if (codes.shape[1], codes.shape[0]) != tuple(size):
            problems.append(Problem("size_mismatch", pair.name,
                                    f"{pair.name}: the mask is {codes.shape[1]}×{codes.shape[0]}, the image "
                                    f"{size[0]}×{size[1]}."))
            continue
        train = to_train_ids(codes, table)
        counts = np.bincount(np.where(train == IGNORE, len(table.names), train).ravel(),
                             minlength=len(table.names) + 1)
        ign = int((codes == table.ignore).sum()) if table.ignore is not None else 0
        unk = int(counts[-1]) - ign
        if unk:
            bad = sorted({int(v) for v in np.unique(codes[train == IGNORE])} - {table.ignore})
            shown = ", ".join(str(v) if table.kind == "ids" else f"rgb{unpack(v)}" for v in bad[:6])
            problems.append(Problem("unknown_values", pair.name, f"{pair.name}: mask values that are not a known "
                                                                 f"class: {shown} ({unk} pixels, ignored)."))
        pix += counts
        imgs += counts[:-1] > 0
        ignored += ign
        unknown += unk
        usable.append(pair.name)
        splits[pair.split or "unsplit"] = splits.get(pair.split or "unsplit", 0) + 1
    if on_progress:
        on_progress(len(pairs), len(pairs))
    return SegReport(list(table.names), problems, {n: int(pix[i]) for i, n in enumerate(table.names)},
                     {n: int(imgs[i]) for i, n in enumerate(table.names)}, ignored, unknown, splits, sizes, usable)


def seeded_split(names: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """A reproducible split of `names` (sorted first, so the order of discovery does not matter)."""
    order = sorted(names)
    rng = random.Random(seed)
    rng.shuffle(order)
    n_val = max(1, round(val_fraction * len(order))) if len(order) > 1 else 0
    val = set(order[:n_val])
    return {n: "val" if n in val else "train" for n in names}


def scan_values(pairs: list[Pair], limit: int = 400) -> tuple[set[int], str, list | None]:
    """The codes found in (up to `limit`) masks, the masks' kind and the first P-mode palette."""
    values: set[int] = set()
    kinds: dict[str, int] = {}
    palette = None
    step = max(1, len([p for p in pairs if p.mask]) // limit)
    for pair in [p for p in pairs if p.mask][::step]:
        try:
            codes, kind, pal = read_codes(pair.mask)
        except SegDataError:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "colour":
            values.update(int(v) for v in np.unique(codes))
        else:
            values.update(int(v) for v in np.unique(codes))
        palette = palette or pal
    kind = max(kinds, key=kinds.get) if kinds else "ids"
    if kind == "colour" and len(values) > 64:
        raise SegDataError(f"the colour masks hold {len(values)} different colours; colour masks need a few flat "
                           "colours (was a mask saved as JPEG, or smoothed?)")
    return values, kind, palette


# --- the run manifest ----------------------------------------------------------------------------------------------

def _manifest(pairs: list[Pair], table: ClassTable, report: SegReport, source: dict, split_mode: str,
              notes: list[str], seed: int, val_fraction: float) -> dict:
    usable = set(report.usable)
    good = [p for p in pairs if p.name in usable]
    if split_mode == "folders":
        splits = {p.name: p.split or "train" for p in good}
    else:
        splits = seeded_split([p.name for p in good], val_fraction, seed)
    items = [{"image": p.image, "mask": p.mask, "split": splits[p.name], "name": p.name,
              "size": list(report.sizes.get(p.name, (0, 0)))} for p in good]
    if not any(it["split"] == "train" for it in items) or not any(it["split"] == "val" for it in items):
        from core.trainset import DatasetProblem

        raise DatasetProblem("Segmentation needs usable training and validation images (image + mask); found "
                             f"{sum(it['split'] == 'train' for it in items)} training and "
                             f"{sum(it['split'] == 'val' for it in items)} validation pairs.")
    skipped = [p.message for p in report.problems if p.kind != "unknown_values"]
    return {"task": "segmentation", "format_version": 1, "classes": list(table.names), "table": table.to_dict(),
            "ignore_value": table.ignore, "items": items, "split_mode": split_mode, "seed": seed,
            "val_fraction": val_fraction, "source": source, "notes": notes + skipped[:50],
            "n_problems": len(report.problems), "report": report.to_dict()}


def resolve_folder(folder: str | Path, seed: int = 0, ignore: int | None = None, val_fraction: float = 0.2,
                   on_progress: ProgressFn | None = None) -> dict:
    """The run manifest of a folder of images + masks (decodes everything once; problems named by file)."""
    from core.trainset import DatasetProblem

    try:
        scan = scan_folder(folder)
        values, kind, palette = scan_values(scan.pairs)
        table, notes = table_from(values, kind, scan.classes_file, ignore, palette)
    except SegDataError as err:
        raise DatasetProblem(str(err)) from None
    report = validate_pairs(scan.pairs, table, scan.extra_masks, on_progress)
    split_mode = "folders" if scan.layout == "train/val" else "seeded"
    source = {"kind": "folder", "path": str(Path(folder).resolve()), "layout": scan.layout,
              "classes_file": str(scan.classes_file) if scan.classes_file else None}
    return _manifest(scan.pairs, table, report, source, split_mode, scan.notes + notes, seed, val_fraction)


# --- the app's store ------------------------------------------------------------------------------------------------

def side_file(dataset_id: str) -> Path:
    from core.data.store import dataset_dir

    return dataset_dir(dataset_id) / SIDE_FILE


def read_side(dataset_id: str) -> dict:
    from core.storage import read_json

    data = read_json(side_file(dataset_id))
    if not isinstance(data, dict) or "table" not in data:
        raise SegDataError("this dataset has no segmentation masks (import it as a segmentation dataset)")
    return data


def write_side(dataset_id: str, data: dict) -> None:
    from core.storage import write_json_atomic

    write_json_atomic(side_file(dataset_id), data)


def stored_pairs(dataset_id: str) -> tuple[list[Pair], ClassTable, dict, dict[str, tuple[int, int]]]:
    """(pairs, class table, side data, image sizes) of a stored segmentation dataset."""
    from core.data.store import dataset_dir, load_dataset

    ds = load_dataset(dataset_id)
    side = read_side(dataset_id)
    folder = dataset_dir(dataset_id)
    table = ClassTable.from_dict(side["table"])
    masks = side.get("masks", {})
    split = side.get("split", {})
    pairs = []
    sizes = {}
    for it in ds.items:
        mask = masks.get(it.file)
        mask_path = str(folder / mask) if mask and re.fullmatch(r"masks/[0-9a-f]{16}(-\d+)?\.png", mask) else None
        pairs.append(Pair(str(ds.path(it)), mask_path, split.get(it.file), it.original_name or it.file))
        sizes[str(ds.path(it))] = (it.width, it.height)
    return pairs, table, side, sizes


def stored_report(dataset_id: str, on_progress: ProgressFn | None = None) -> SegReport:
    """The validation report of a stored dataset (images were decoded at import; masks are read now)."""
    from core.data.store import load_dataset

    pairs, table, side, sizes = stored_pairs(dataset_id)
    report = validate_pairs(pairs, table, side.get("extra_masks", []), on_progress, image_sizes=sizes)
    ds = load_dataset(dataset_id)
    painted = {p.name for p in pairs if p.mask}  # a mask refused at import and painted since: no longer a problem
    found = [p for p in side.get("import_problems", []) if not (p["kind"] == "unreadable_mask"
                                                                  and p["file"] in painted)]
    # a mask refused at import is not stored ('no mask' would say it twice); stray colours were stored as void
    said = {(p["file"], "missing_mask" if p["kind"] == "unreadable_mask" else p["kind"]) for p in found}
    report.problems = [Problem("unreadable_image", s.original_name, f"{s.original_name}: the image cannot be "
                               f"decoded ({s.reason}).") for s in ds.skipped] + \
        [Problem(p["kind"], p["file"], p["message"]) for p in found] + \
        [p for p in report.problems if (p.file, p.kind) not in said]
    report.notes = list(side.get("notes", []))
    return report


def resolve_stored(dataset_id: str, seed: int = 0) -> dict:
    from core.trainset import DatasetProblem

    try:
        pairs, table, side, sizes = stored_pairs(dataset_id)
    except SegDataError as err:
        raise DatasetProblem(str(err)) from None
    report = validate_pairs(pairs, table, side.get("extra_masks", []), image_sizes=sizes)
    mode = side.get("split_mode", "seeded")
    if mode != "folders":  # the seeded split saved with the dataset
        pairs = [replace(p, split=p.split or "train") for p in pairs]
        mode = "folders"
    from core.data.store import load_dataset

    source = {"kind": "store", "dataset_id": dataset_id, "name": load_dataset(dataset_id).name}
    return _manifest(pairs, table, report, source, mode, list(side.get("notes", [])), seed,
                     float(side.get("val_fraction", 0.2)))


def _stage_tree(scan: FolderScan) -> list[tuple[str, str, str]]:
    """(display name, path, label) for the store's import of the images."""
    return [(p.name, p.image, "image") for p in scan.pairs]


def import_folder(folder: str | Path, name: str, *, ignore: int | None = None, val_fraction: float = 0.2,
                  seed: int = 0, classes: list[str] | None = None, source: dict | None = None,
                  on_progress: ProgressFn | None = None) -> tuple[str, SegReport]:
    """Import images (through the store: safe decode, generated names) and their masks (as id PNGs beside them) into
    a new segmentation dataset; returns its id and the validation report."""
    from core.data import store
    from core.data.splits import SplitConfig

    scan = scan_folder(folder, (source or {}).get("name"))
    values, kind, palette = scan_values(scan.pairs)
    table, notes = table_from(values, kind, scan.classes_file, ignore, palette)
    if classes:
        table = replace(table, names=tuple(classes[:len(table.names)]) + table.names[len(classes):])
    result = store.import_files(_stage_tree(scan), name, split=SplitConfig(val_fraction=val_fraction, seed=seed),
                                on_progress=on_progress)
    ds = result.dataset
    store.set_task(ds.id, "segmentation")
    folder_out = store.dataset_dir(ds.id) / MASK_FOLDER
    folder_out.mkdir(exist_ok=True)
    by_name = {p.name: p for p in scan.pairs}
    masks: dict[str, str] = {}
    split: dict[str, str] = {}
    import_problems: list[dict] = []
    # the stored masks are id masks: colour masks are converted once, here (ignore → 255)
    stored_table = table if table.kind == "ids" else replace(table, codes=tuple(range(len(table.names))),
                                                             ignore=IGNORE if table.ignore is not None else None,
                                                             kind="ids")
    if stored_table.kind == "ids" and (max(stored_table.codes) > 255 or (stored_table.ignore or 0) > 255):
        raise SegDataError("mask values above 255 are not supported")
    for it in ds.items:
        pair = by_name.get(it.original_name)
        if pair is None:
            continue
        split[it.file] = pair.split or ""
        if pair.mask is None:
            continue
        try:
            codes, mkind, _ = read_codes(pair.mask)
            if mkind != table.kind:
                raise SegDataError(f"the mask is a {mkind} mask, the others are {table.kind} masks")
        except SegDataError as err:
            import_problems.append({"kind": "unreadable_mask", "file": pair.name,
                                    "message": f"{pair.name}: {err}; left out."})
            continue
        if table.kind == "colour":
            train = to_train_ids(codes, table)
            stray = unknown_colours(codes, train, table)
            if stray:
                import_problems.append({"kind": "unknown_values", "file": pair.name,
                                        "message": f"{pair.name}: {stray}"})
            codes = np.where(train == IGNORE, IGNORE, train)
        codes = np.clip(codes, 0, 255).astype(np.uint8)
        rel = f"{MASK_FOLDER}/{Path(it.file).stem}.png"
        write_mask_png(codes, store.dataset_dir(ds.id) / rel)
        masks[it.file] = rel
    split_mode = "folders" if scan.layout == "train/val" else "seeded"
    if split_mode == "seeded":
        split = {**split, **seeded_split(list(split), val_fraction, seed)}
    side = {"version": 1, "table": stored_table.to_dict(), "source_kind": table.kind, "masks": masks,
            "split": split, "split_mode": split_mode, "seed": seed, "val_fraction": val_fraction,
            "extra_masks": scan.extra_masks, "import_problems": import_problems, "notes": scan.notes + notes,
            "source": source or {"kind": "folder", "name": Path(folder).name}}
    write_side(ds.id, side)
    return ds.id, stored_report(ds.id)


def import_zip(zip_path: str | Path, name: str, display_name: str | None = None,
               **kwargs) -> tuple[str, SegReport]:
    """Extract a zip safely (core.data.archive) and import it like a folder (a single top folder is entered).

    ``display_name`` is the zip's name as the user knows it (an upload spooled under another name): it is recorded
    as the source and used in messages."""
    from core.data.archive import extract_archive
    from core.settings import datasets_root

    shown = display_name or Path(zip_path).name
    tmp = datasets_root() / f".extract-{secrets.token_hex(8)}"
    try:
        extract_archive(zip_path, tmp)
        root = _single_top(tmp)
        inner = shown if root == tmp else f"{shown}: {root.relative_to(tmp).as_posix()}"
        return import_folder(root, name, source={"kind": "zip", "name": inner}, **kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_uploads(files: Iterable[tuple[str, bytes]], name: str, **kwargs) -> tuple[str, SegReport]:
    """A browser folder upload ((relative path, bytes)): written under checked names into a temporary folder, then
    imported like a folder."""
    from core.data.archive import write_uploaded_files
    from core.settings import datasets_root

    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=datasets_root()))
    try:
        write_uploaded_files(files, tmp)
        root = _single_top(tmp)
        shown = root.relative_to(tmp).as_posix() if root != tmp else "the uploaded folder"
        return import_folder(root, name, source={"kind": "upload", "name": shown}, **kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload_folder_name(names: Iterable[str]) -> str:
    """The dropped folder's own name (the first part shared by every uploaded file's path), '' when there is none."""
    paths = [n.replace("\\", "/") for n in names]
    tops = {p.split("/", 1)[0] for p in paths}
    return tops.pop() if len(tops) == 1 and all("/" in p for p in paths) else ""


def _single_top(folder: Path) -> Path:
    """Enter a lone top folder (a zip of 'mydata/' holding images/ and masks/)."""
    root = folder
    for _ in range(3):
        kids = [k for k in root.iterdir() if not k.name.startswith(".")]
        if len(kids) == 1 and kids[0].is_dir() and kids[0].name.lower() not in IMAGE_DIRS + ("train", "val"):
            root = kids[0]
        else:
            break
    return root


# --- edits from the app ----------------------------------------------------------------------------------------------

def update_table(dataset_id: str, names: list[str], ignore: int | None, colours: list | None = None) -> ClassTable:
    """Rename classes (and recolour them, or set the ignore value) of a stored dataset."""
    side = read_side(dataset_id)
    table = ClassTable.from_dict(side["table"])
    clean = [" ".join(str(n).split())[:100] for n in names]
    if any(not n for n in clean):
        raise SegDataError("a class name cannot be empty")
    codes = list(table.codes)
    cols = [tuple(int(v) for v in c) for c in (colours or table.colours)]
    names_all = clean
    if table.ignore is not None and ignore != table.ignore:  # the old ignore value becomes a class again
        codes.append(int(table.ignore))
        names_all = clean + [f"class {table.ignore}"]
        cols.append(default_colour(len(cols)))
    if ignore is not None and ignore in codes:
        i = codes.index(ignore)
        codes.pop(i)
        names_all.pop(i)
        cols.pop(i)
    new = ClassTable(tuple(names_all), tuple(codes), tuple(cols), ignore, table.kind)
    side["table"] = new.to_dict()
    write_side(dataset_id, side)
    return new


def add_class(dataset_id: str, name: str) -> ClassTable:
    side = read_side(dataset_id)
    table = ClassTable.from_dict(side["table"])
    used = set(table.codes) | {table.ignore}
    code = next(c for c in range(256) if c not in used)
    new = ClassTable(table.names + (" ".join(name.split())[:100] or f"class {code}",), table.codes + (code,),
                     table.colours + (default_colour(len(table.names)),), table.ignore, table.kind)
    side["table"] = new.to_dict()
    write_side(dataset_id, side)
    return new


def mask_path(dataset_id: str, item_file: str) -> Path:
    from core.data.store import dataset_dir

    return dataset_dir(dataset_id) / MASK_FOLDER / f"{Path(item_file).stem}.png"


def save_mask(dataset_id: str, item_file: str, codes: np.ndarray) -> Path:
    """Write (or replace) the id mask of one stored image (e.g. painted in the app)."""
    from core.data.store import load_dataset

    ds = load_dataset(dataset_id)
    item = next((it for it in ds.items if it.file == item_file), None)
    if item is None:
        raise SegDataError("no such image in this dataset")
    if (codes.shape[1], codes.shape[0]) != (item.width, item.height):
        raise SegDataError(f"the mask is {codes.shape[1]}×{codes.shape[0]}, the image {item.width}×{item.height}")
    side = read_side(dataset_id)
    path = mask_path(dataset_id, item_file)
    path.parent.mkdir(exist_ok=True)
    write_mask_png(codes.astype(np.uint8), path)
    side.setdefault("masks", {})[item_file] = f"{MASK_FOLDER}/{path.name}"
    side["import_problems"] = [p for p in side.get("import_problems", []) if p.get("file") != item.original_name]
    write_side(dataset_id, side)
    return path


def read_stored_codes(dataset_id: str, item_file: str) -> np.ndarray | None:
    side = read_side(dataset_id)
    rel = side.get("masks", {}).get(item_file)
    if not rel:
        return None
    from core.data.store import dataset_dir

    try:
        return read_codes(dataset_dir(dataset_id) / rel)[0]
    except SegDataError:
        return None


def resize_masks(dataset_id: str, names: Iterable[str] | None = None) -> list[str]:
    """Resize the masks whose size differs from their image to the image size, nearest-neighbour only."""
    from core.data.store import load_dataset

    ds = load_dataset(dataset_id)
    wanted = set(names) if names is not None else None
    done = []
    for it in ds.items:
        if wanted is not None and (it.original_name not in wanted and it.file not in wanted):
            continue
        codes = read_stored_codes(dataset_id, it.file)
        if codes is None or (codes.shape[1], codes.shape[0]) == (it.width, it.height):
            continue
        save_mask(dataset_id, it.file, resize_nearest(codes.astype(np.uint8), (it.width, it.height)))
        done.append(it.original_name)
    return done


def fingerprint(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
    return h.hexdigest()[:16]


def manifest_json(manifest: dict) -> str:
    return json.dumps(manifest, sort_keys=True)
