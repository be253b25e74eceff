"""Helpers for the data tests: synthetic images, malformed files, crafted zips, directory snapshots."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
#: HEIC photos as an iPhone writes them (see fixtures/README.md): the second is stored sideways, upright red on top.
IPHONE_PHOTO = Path(__file__).resolve().parent / "fixtures" / "iphone.heic"
IPHONE_ROTATED = Path(__file__).resolve().parent / "fixtures" / "iphone_rotated.heic"


def noise_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A distinct RGB image per seed (smooth blobs + noise: many colours, unrelated perceptual hashes)."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = base + rng.integers(-20, 21, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (64, 64), **save: object) -> bytes:
    buf = io.BytesIO()
    im = noise_image(seed, size)
    im.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" and not save else save))
    return buf.getvalue()


def write_image(path: Path, seed: int, fmt: str = "JPEG", size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt, size))
    return path


def make_tree(root: Path, classes: dict[str, int], *, split: str | None = None, seed: int = 0) -> list[Path]:
    """root/[split/]<class>/img_<n>.jpg with distinct images; returns the paths."""
    out = []
    base = root / split if split else root
    for c_idx, (label, n) in enumerate(classes.items()):
        for i in range(n):
            out.append(write_image(base / label / f"img_{i:03d}.jpg", seed * 100_000 + c_idx * 1000 + i))
    return out


def near_copy(data: bytes) -> bytes:
    """The same picture, slightly changed (brightness +4, re-encoded): a different file, a near-identical image."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    arr = np.clip(np.asarray(im, dtype=np.int16) + 4, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- malformed files

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (decompression-bomb probe)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


EPS_BYTES = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
             b"newpath 10 10 moveto 90 90 lineto stroke\nshowpage\n%%EOF\n")
HTML_BYTES = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n"


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def malformed_corpus(seed: int = 0) -> dict[str, bytes]:
    """name -> bytes of files that must all be rejected."""
    jpeg = image_bytes(seed, "JPEG", (256, 256))
    png = image_bytes(seed + 1, "PNG", (128, 128))
    return {
        "truncated.jpg": truncated(jpeg),
        "truncated_quarter.jpg": truncated(jpeg, 0.25),
        "truncated.png": truncated(png, 0.6),
        "zero.jpg": b"",
        "page.jpg": HTML_BYTES,
        "huge_ihdr.png": png_claiming(20000, 10000),
        "figure.jpg": EPS_BYTES,
        "notes.png": b"just some text that is not an image at all\n" * 3,
        "garbage.jpg": bytes(np.random.default_rng(seed).integers(0, 256, 4000, dtype=np.uint8)),
        "header_only.jpg": jpeg[:200],
        "tiny.png": image_bytes(seed, "PNG", (8, 8)),
    }


# ------------------------------------------------------------------------------------------- zips

def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip built by zipfile from (name or ZipInfo, data) pairs; names are written exactly as given."""
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are on purpose
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def link_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    return info, target.encode()


def special_entry(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o020644 << 16)  # character device
    return info, b""


def overlapping_zip(entries: list[tuple[str, bytes]]) -> bytes:
    """A zip whose last central-directory record points at the first local header (overlapping entries)."""
    data = bytearray(zip_bytes(entries, zipfile.ZIP_STORED))
    positions = []
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        positions.append(pos)
        pos = data.find(b"PK\x01\x02", pos + 4)
    data[positions[-1] + 42: positions[-1] + 46] = struct.pack("<I", 0)
    return bytes(data)


def bomb_zip(megabytes: int = 64) -> bytes:
    """One deflated entry of zeros: ratio ~1000×."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("class_a/bomb.bmp", "w") as fh:
        block = b"\x00" * (1 << 20)
        for _ in range(megabytes):
            fh.write(block)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- snapshots

def snapshot(root: Path) -> set[str]:
    """Every path under root (files, dirs, links), relative, without following links."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


# ------------------------------------------------------------------------------------------- worker tasks

def sleepy_task(path: str, options: object) -> object:
    """Replacement check used by the timeout test (runs inside the worker processes)."""
    from core.data.images import inspect_file

    if "slow" in Path(path).name:
        time.sleep(30)
    if "crash" in Path(path).name:
        os._exit(3)
    return inspect_file(path, options)  # type: ignore[arg-type]


def example_module(folder: Path, name: str) -> ModuleType:
    """An export's ``predict_example.py`` loaded as a module (its ``main(argv)`` and helpers callable)."""
    spec = importlib.util.spec_from_file_location(name, folder / "predict_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
