"""Images for training and prediction, prepared the same way for both.

Every photo is decoded once (EXIF orientation, colour modes: `core.data.images.load_rgb`), made square at the
backbone's eval resize size (`fit`: the short side resized and the centre square cut, or the whole photo stretched to
the square) and cached as uint8 (in memory and on disk, so a
second run starts at once). Validation and prediction take the centre crop of that square (= timm's eval transform);
training takes random resized crops, flips and colour changes from it, all drawn from a generator seeded by
(seed, epoch, position), so a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from core.data.images import ImageError, load_rgb
from core.settings import cache_root
from core.storage import write_json_atomic
from core.zoo import BackboneSpec

# How a photo becomes the model's square. "crop" (the default) is timm's eval transform; "squash" and "pad" keep the
# whole photo (the top and bottom of a portrait garment): +2 points fine-tuned on clothing10, -1.5 on hymenoptera
# and worse for the quick model on both (BENCHMARKS.md, "How photos become squares").
FITS = {"crop": "Crop the centre square (the edges of long photos are cut off)",
        "squash": "Whole photo, stretched to a square (nothing is cut off)",
        "pad": "Whole photo, with borders to make it square (nothing is cut off or stretched)"}

_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class Prep:
    """The preprocessing identity of a run: crop size, resize size, interpolation, normalisation, and how a photo
    becomes a square (`fit`, one of FITS)."""

    size: int
    scale_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fit: str = "crop"

    def key(self) -> str:
        """Identity for caches; "crop" is left out so caches made before `fit` existed stay valid."""
        d = asdict(self)
        if d["fit"] == "crop":
            del d["fit"]
        return json.dumps(d, sort_keys=True)


def prep_for(spec: BackboneSpec, fit: str = "crop") -> Prep:
    """The backbone's eval preprocessing (timm's resize size, crop, interpolation, normalisation) with `fit`."""
    if fit not in FITS:
        raise ValueError(f"Unknown image fit '{fit}'; use one of {', '.join(FITS)}")
    return Prep(spec.input_size, math.floor(spec.input_size / spec.crop_pct), spec.interpolation, spec.mean, spec.std,
                fit)


# The way `square` computes its pixels; part of every cache key, so caches made another way are rebuilt.
SQUARE_VERSION = 2  # 2: resample only the centre square's source box (1: resize the whole photo, then crop)


def square(img: Image.Image, prep: Prep) -> np.ndarray:
    """The photo as a prep.scale_size square, uint8 HxWx3.

    fit "crop": resize the short side and cut the centre square. Only the square's source box is resampled
    (Pillow's `box`; the filter still reads the pixels just outside it), which is the same picture as resizing the
    whole photo and cropping (within one level of rounding) for 25–45 % less work.
    fit "squash": resize the whole photo to the square (its proportions change; nothing is cut off).
    fit "pad": resize the long side and centre the whole photo on a square of the mean colour (borders)."""
    s = prep.scale_size
    w, h = img.size
    resample = _INTERP.get(prep.interpolation, Image.Resampling.BILINEAR)
    if prep.fit == "squash":
        return np.asarray(img.resize((s, s), resample), dtype=np.uint8)
    if prep.fit == "pad":
        return np.asarray(padded(img, s, resample, pad_colour(prep)), dtype=np.uint8)
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    fx, fy = w / nw, h / nh
    box = (left * fx, top * fy, (left + s) * fx, (top + s) * fy)
    img = img.resize((s, s), resample, box=box)
    return np.asarray(img, dtype=np.uint8)


def pad_colour(prep: Prep) -> tuple[int, int, int]:
    """The border colour of "pad": the normalisation mean, which the model sees as zero."""
    return tuple(round(255 * m) for m in prep.mean)


def padded(img: Image.Image, s: int, resample: Image.Resampling, colour: tuple[int, int, int]) -> Image.Image:
    """The whole photo, its long side resized to `s`, centred on an s×s canvas of `colour`."""
    w, h = img.size
    k = s / max(w, h)
    small = img.resize((max(1, round(w * k)), max(1, round(h * k))), resample)
    canvas = Image.new("RGB", (s, s), colour)
    canvas.paste(small, ((s - small.size[0]) // 2, (s - small.size[1]) // 2))
    return canvas


def reduced_train_size(input_size: int) -> int:
    """A smaller side for training crops, about 0.72 of the model's input in multiples of 32 (224 → 160): each
    epoch costs about half, and a model trained on smaller random crops does well at the full size (FixRes)."""
    return max(32, round(input_size * 0.72 / 32) * 32)


def load_square(source: str | os.PathLike | bytes, prep: Prep) -> np.ndarray:
    """Decode (safely, normalised) and square one image: the single preprocessing entry for files and uploads."""
    return square(load_rgb(source), prep)


def _centre(batch: torch.Tensor, size: int) -> torch.Tensor:
    s = batch.shape[-1]
    off = (s - size) // 2
    return batch[..., off:off + size, off:off + size]


def norm_constants(prep: Prep) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) on the 0–255 scale, shaped (1,3,1,1): x_model = (x_u8 - mean) / std."""
    return torch.tensor(prep.mean).view(1, 3, 1, 1) * 255, torch.tensor(prep.std).view(1, 3, 1, 1) * 255


def normalise(batch_u8: torch.Tensor, prep: Prep, channels_last: bool = True) -> torch.Tensor:
    """uint8 NCHW → float normalised, in channels_last memory when asked (one conversion pass, then in place: half
    the time of converting, normalising and re-laying out separately; bit-identical to the export's own script)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = norm_constants(prep)
    return batch_u8.to(torch.float32, memory_format=fmt).sub_(mean).div_(std)


def centre_u8(squares: np.ndarray, size: int) -> np.ndarray:
    """Centre crops (N,size,size,3 uint8, a view) of cached squares (N,S,S,3): what validation shows the model."""
    off = (squares.shape[1] - size) // 2
    return squares[:, off:off + size, off:off + size]


def eval_batch(squares: np.ndarray, prep: Prep, channels_last: bool = True) -> torch.Tensor:
    """Centre crops of cached squares (N,S,S,3 uint8) → normalised model input."""
    crops = np.require(centre_u8(squares, prep.size), requirements=["W"])
    return normalise(torch.from_numpy(crops).permute(0, 3, 1, 2), prep, channels_last)


def predict_input(source: str | os.PathLike | bytes, prep: Prep) -> torch.Tensor:
    """The model input for one file or upload, exactly as validation sees it (1,3,H,W)."""
    return eval_batch(load_square(source, prep)[None], prep, channels_last=False)


def train_batch(squares: np.ndarray, prep: Prep, augment: Sequence[str],
                gen: torch.Generator | Sequence[torch.Generator], channels_last: bool = True,
                size: int | None = None, min_area: float = 0.25) -> torch.Tensor:
    """Augmented training input from cached squares; every random draw comes from `gen` (one generator for the
    batch, or one per image so that an image's augmentation does not depend on which batch or process it is in).
    `size`: the side of the training crops (default: the model's input size); `min_area`: the smallest share of
    the square a random crop keeps (TrainConfig.crop_min_area)."""
    t = torch.from_numpy(np.require(squares, requirements=["C", "W"])).permute(0, 3, 1, 2)
    s, size = t.shape[-1], size or prep.size
    gens = [gen] * len(t) if isinstance(gen, torch.Generator) else list(gen)
    out = []
    for img, gen in zip(t, gens, strict=True):
        if "crop" in augment:
            area = s * s * float(torch.empty(1).uniform_(min_area, 1.0, generator=gen))
            logr = float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen))
            ratio = math.exp(logr)
            w = min(s, round(math.sqrt(area * ratio)))
            h = min(s, round(math.sqrt(area / ratio)))
            top = int(torch.randint(0, s - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, s - w + 1, (1,), generator=gen))
            img = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
        else:
            img = _centre(img, size)
        if "flip" in augment and float(torch.rand(1, generator=gen)) < 0.5:
            img = TF.horizontal_flip(img)
        if "color" in augment:
            b, c, sat = (float(v) for v in torch.empty(3).uniform_(0.8, 1.2, generator=gen))
            img = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), sat)
        out.append(img)
    return normalise(torch.stack(out), prep, channels_last)


def batch_generator(seed: int, epoch: int, pos: int) -> torch.Generator:
    """The generator for the batch starting at `pos` of `epoch`: a pure function of its place in the run."""
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + pos)
    return gen


def image_generators(seed: int, epoch: int, start: int, count: int) -> list[torch.Generator]:
    """One generator per image at positions start..start+count-1 of the epoch's order (a stream distinct from
    `batch_generator`'s)."""
    gens = []
    for k in range(count):
        gen = torch.Generator()
        gen.manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + start + k) ^ 0x5DEECE66D)
        gens.append(gen)
    return gens


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator()
    gen.manual_seed(seed * 7919 + epoch)
    return torch.randperm(n, generator=gen)


# --- the decoded-image cache ----------------------------------------------------------------------------------

def _decode_one(path: str, prep: Prep) -> tuple[np.ndarray | None, str]:
    try:
        return load_square(path, prep), ""
    except ImageError as err:
        return None, str(err)
    except OSError as err:
        return None, f"cannot read file ({err})"


def _cache_key(paths: Sequence[str], prep: Prep) -> str:
    h = hashlib.sha256(f"square v{SQUARE_VERSION}|{prep.key()}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:24]


@dataclass
class ImageCache:
    """Decoded squares for a list of files; `failed` maps index → reason for files that could not be decoded."""

    squares: np.ndarray
    failed: dict[int, str]
    prep: Prep

    def __len__(self) -> int:
        return len(self.squares)


DECODE_CHUNK = 32  # images per decoding task: workers write their rows themselves (~10 % faster than one by one)


def build_cache(paths: Sequence[str], prep: Prep, on_progress: Callable[[int, int], None] | None = None,
                workers: int | None = None) -> ImageCache:
    """Decode every file once (in worker threads), reusing a matching cache on disk when there is one."""
    folder = cache_root() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    key = _cache_key(paths, prep)
    data_path, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    shape = (len(paths), prep.scale_size, prep.scale_size, 3)
    if data_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        arr = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
        if on_progress:
            on_progress(len(paths), len(paths))
        return ImageCache(arr, {int(k): v for k, v in meta["failed"].items()}, prep)
    _remove_stale_parts(folder)
    tmp = data_path.with_suffix(f".{os.getpid()}.tmp")
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)  # bounded memory for big sets
    failed: dict[int, str] = {}
    n_workers = workers if workers is not None else min(len(os.sched_getaffinity(0)), 4)
    chunks = [range(lo, min(lo + DECODE_CHUNK, len(paths))) for lo in range(0, len(paths), DECODE_CHUNK)]

    decode_chunk = partial(_decode_rows, out, paths, prep)

    if n_workers > 1 and len(paths) > 16:
        # Threads, not processes: Pillow releases the GIL while decoding and resizing, and threads need no
        # re-import of torch per worker nor a guarded __main__ in whoever calls us.
        with ThreadPoolExecutor(n_workers) as pool:
            _collect(failed, pool.map(decode_chunk, chunks), chunks, on_progress)
    else:
        _collect(failed, map(decode_chunk, chunks), chunks, on_progress)
    out.flush()
    del out
    os.replace(tmp, data_path)
    write_json_atomic(meta_path, {"n": len(paths), "prep": asdict(prep), "failed": failed})
    return ImageCache(np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), failed, prep)


def _remove_stale_parts(folder: Path) -> None:
    """Delete half-built caches (`<key>.<pid>.tmp`) whose builder process is gone (e.g. killed mid-build)."""
    for part in folder.glob("*.tmp"):
        pid = part.suffixes[-2].lstrip(".") if len(part.suffixes) >= 2 else ""
        if pid.isdigit() and not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decode_rows(out: np.ndarray, paths: Sequence[str], prep: Prep, rows: range) -> dict[int, str]:
    """Decode `rows` of `paths` straight into `out` (no hand-over to the main thread); their failures."""
    bad = {}
    for i in rows:
        img, reason = _decode_one(str(paths[i]), prep)
        if img is None:
            bad[i] = reason
        else:
            out[i] = img
    return bad


def _collect(failed: dict[int, str], results, chunks: list[range],
             on_progress: Callable[[int, int], None] | None) -> None:
    total = chunks[-1].stop if chunks else 0
    for rows, bad in zip(chunks, results, strict=True):
        failed.update(bad)
        if on_progress:
            on_progress(rows.stop, total)


@dataclass
class RunData:
    """A run's images, decoded once, with class indices and the usable train/val positions."""

    cache: ImageCache
    labels: torch.Tensor
    train_idx: list[int]
    val_idx: list[int]


def prepare_run_data(manifest: dict, prep: Prep, on_progress: Callable[[int, int], None] | None = None,
                     on_skip: Callable[[str], None] | None = None) -> RunData:
    """Decode the run's files (cached) and split them; every unreadable file is reported through `on_skip`."""
    items, classes = manifest["items"], list(manifest["classes"])
    cache = build_cache([it["path"] for it in items], prep, on_progress)
    for i, reason in sorted(cache.failed.items()):
        if on_skip:
            on_skip(f"{items[i].get('name', items[i]['path'])}: skipped, {reason}.")
    label_of = {c: k for k, c in enumerate(classes)}
    labels = torch.tensor([label_of[it["label"]] for it in items])
    usable = [i for i in range(len(items)) if i not in cache.failed]
    return RunData(cache, labels, [i for i in usable if items[i]["split"] == "train"],
                   [i for i in usable if items[i]["split"] == "val"])
