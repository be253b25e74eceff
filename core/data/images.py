"""Safe image decoding, shared by import, training and prediction.

``load_rgb`` is the one way an image file becomes pixels: a format allowlist, a pixel cap checked before decoding, a
full decode (truncated files fail), EXIF orientation, first frame only, and one fixed conversion to 8-bit RGB.
``check_images`` runs that decode for many files in worker processes with a per-file timeout, streaming results.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
#: Phone formats (ISO media, ``ftyp`` boxes): iPhone photos are HEIF/HEIC (decoded by pillow-heif), AVIF by Pillow.
PHONE_FORMATS: tuple[str, ...] = ("HEIF", "AVIF")
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
DEFAULT_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 60.0
BACKGROUND = (255, 255, 255)
#: Colours are counted up to this many on a small thumbnail (``ImageInfo.colors`` is capped at COLOR_CAP + 1).
COLOR_CAP = 256
#: Pillow format name -> extension used when the store names files.
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp",
                     "GIF": ".gif", "TIFF": ".tif", "HEIF": ".heic", "AVIF": ".avif"}

Source = str | os.PathLike[str] | bytes
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ImageError(Exception):
    """An image we refuse, with a reason a non-programmer can read and a machine-readable kind.

    kind is one of: unreadable, unsupported_format, too_large, too_small.
    """

    def __init__(self, reason: str, kind: str = "unreadable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class ImageInfo:
    """What a successful check learned about one file."""

    width: int
    height: int
    format: str
    mode: str
    frames: int
    bytes: int
    sha256: str
    phash: str
    colors: int
    dhash: str = ""  # second perceptual hash, confirms near-duplicate candidates found by phash

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS.get(self.format, ".img")


@dataclass(frozen=True)
class Rejected:
    """A file that failed the check."""

    reason: str
    kind: str = "unreadable"


@dataclass(frozen=True)
class CheckOptions:
    """Limits applied by ``check_image``/``check_images`` (and by ``load_rgb`` via its arguments)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    min_side: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_limit_mb: int = 4096


# --------------------------------------------------------------------------------------------------- decoding

_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%!PS", "EPS"), (0, b"\xc5\xd0\xd3\xc6", "EPS"), (0, b"%PDF", "PDF"), (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"), (0, b"\xff\x4f\xff\x51", "JPEG 2000"), (4, b"jP  ", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"), (4, b"JXL ", "JPEG XL"), (0, b"qoif", "QOI"), (0, b"DDS ", "DDS"),
    (0, b"gimp xcf", "XCF"), (0, b"PK\x03\x04", "ZIP archive"), (0, b"\x1f\x8b", "GZIP archive"),
    (0, b"Rar!", "RAR archive"), (0, b"7z\xbc\xaf", "7Z archive"), (0, b"\x0a\x05\x01", "PCX"),
    (0, b"#?RADIANCE", "HDR"), (0, b"\x76\x2f\x31\x01", "OpenEXR"), (0, b"SIMPLE  =", "FITS"),
)
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF", b"crx ": "RAW"}


def sniff_reason(head: bytes) -> ImageError:
    """Explain why bytes that Pillow could not open (with our allowlist) are not an acceptable image."""
    if not head:
        return ImageError("empty file (0 bytes)")
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return ImageError(f"format {name} not allowed", "unsupported_format")
    if head[4:8] == b"ftyp":
        name = _FTYP_BRANDS.get(head[8:12], "video/ISO media")
        if name in ("HEIC", "HEIF", "AVIF"):
            pillow_name = "AVIF" if name == "AVIF" else "HEIF"
            if pillow_name in phone_formats():
                return ImageError(f"corrupt {name} file")
            return ImageError(f"format {name} cannot be opened here ({_PHONE_DECODERS[pillow_name]} is not installed)",
                              "unsupported_format")
        return ImageError(f"format {name} not allowed", "unsupported_format")
    if head[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6") and head[2:3] in (b"\n", b" ", b"\r", b"\t"):
        return ImageError("format PPM not allowed", "unsupported_format")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:1024]:
        return ImageError("not an image (looks like HTML)")
    if b"<svg" in text[:1024]:
        return ImageError("format SVG not allowed", "unsupported_format")
    if text.startswith(b"<?xml"):
        return ImageError("not an image (looks like XML)")
    if head[:4] in (b"\x89PNG", b"GIF8") or head[:2] in (b"\xff\xd8", b"BM", b"II", b"MM"):
        return ImageError("corrupt image header")
    if head[:4] == b"RIFF":
        return ImageError("not an image (RIFF file that is not WEBP)" if head[8:12] != b"WEBP" else "corrupt WEBP")
    sample = head[:1024]
    if sample and sum(32 <= b < 127 or b in (9, 10, 13) for b in sample) > 0.95 * len(sample):
        return ImageError("not an image (looks like a text file)")
    return ImageError("not an image (unknown format)")


def _decode_failure(exc: BaseException) -> ImageError:
    msg = str(exc)
    low = msg.lower()
    if isinstance(exc, EOFError) or "truncat" in low or "broken data stream" in low or "premature end" in low:
        return ImageError("truncated file")
    if isinstance(exc, MemoryError):
        return ImageError("ran out of memory while decoding", "too_large")
    short = (msg[:120] + "…") if len(msg) > 120 else msg
    return ImageError(f"corrupt or unreadable image ({type(exc).__name__}: {short})" if short else
                      f"corrupt or unreadable image ({type(exc).__name__})")


_PHONE_DECODERS = {"HEIF": "the pi-heif package", "AVIF": "Pillow's AVIF support"}


def _heif_opener() -> Callable[..., None] | None:
    """pi-heif's opener (the decoder-only build), else pillow-heif's when that is what is installed, else None."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return None
    return register_heif_opener


@functools.cache
def phone_formats() -> tuple[str, ...]:
    """The phone formats this installation decodes: registers the HEIF opener once per process, when present."""
    register = _heif_opener()
    if register is not None:  # only the primary picture: no thumbnails, depth maps or auxiliary images alongside
        register(thumbnails=False, depth_images=False, aux_images=False)
    Image.init()
    return tuple(name for name in PHONE_FORMATS if name in Image.OPEN)


def formats_for(head: bytes) -> tuple[str, ...]:
    """The Pillow formats to try for a file starting with ``head``: phone formats only for ISO media files."""
    return ALLOWED_FORMATS + phone_formats() if head[4:8] == b"ftyp" else ALLOWED_FORMATS


def _open(fp: io.BufferedIOBase | io.BytesIO, max_pixels: int) -> ImageFile.ImageFile:
    head = fp.read(2048)
    fp.seek(0)
    if not head:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=formats_for(head))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {_claimed_megapixels(exc)} > cap", "too_large") from None
    except UnidentifiedImageError:
        raise sniff_reason(head) from None
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any plugin error is a bad file, never a crash
        raise _decode_failure(exc) from None
    pixels = im.width * im.height
    if pixels > max_pixels:
        im.close()
        raise ImageError(f"image too large: {_megapixels(pixels)} > cap of {_megapixels(max_pixels)}", "too_large")
    if im.width <= 0 or im.height <= 0:
        raise ImageError("image has no pixels")
    return im


def _megapixels(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f} megapixels" if mp >= 100 or mp == int(mp) else f"{mp:.1f} megapixels"


def _claimed_megapixels(exc: BaseException) -> str:
    digits = [int(tok) for tok in str(exc).replace("(", " ").replace(")", " ").split() if tok.isdigit()]
    return _megapixels(digits[0]) if digits else "too many pixels"


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB: alpha composited on white, 16-bit/float scaled, CMYK/palette mapped."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(im).convert("RGB")
    if mode in ("P", "L", "1", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float single-channel images -> 8-bit L, scaled by the type's range (not clipped to white)."""
    import numpy as np

    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = (arr.astype(np.uint32) * 255 + 32767) // 65535
    else:
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = arr
        elif lo >= 0.0 and hi <= 65535.0:
            out = arr / 257.0
        else:
            out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        out = np.rint(out)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _decode(fp: io.BufferedIOBase | io.BytesIO, max_pixels: int,
            min_side: int) -> tuple[Image.Image, ImageFile.ImageFile]:
    im = _open(fp, max_pixels)
    try:
        im.seek(0)
        im.load()
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoder errors of every kind become a reason
        raise _decode_failure(exc) from None
    try:
        oriented = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        oriented = im
    try:
        rgb = to_rgb(oriented if oriented is not None else im)
    except (ValueError, OSError) as exc:  # e.g. LAB/HSV TIFFs Pillow cannot convert
        raise ImageError(f"unsupported colour mode {im.mode} ({exc})", "unsupported_format") from None
    if min(rgb.size) < min_side:
        raise ImageError(f"too small: {rgb.width}×{rgb.height} px (minimum {min_side} px per side)", "too_small")
    return rgb, im


def load_rgb(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> Image.Image:
    """Decode a file path or bytes into an 8-bit RGB image, or raise ``ImageError`` with a readable reason."""
    if isinstance(source, bytes | bytearray | memoryview):
        fp: Any = io.BytesIO(bytes(source))
    else:
        try:
            fp = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    with fp:
        rgb, original = _decode(fp, max_pixels, min_side)
        if rgb is original:
            rgb = rgb.copy()  # detach from the file handle
        original.close()
        return rgb


# --------------------------------------------------------------------------------------------------- checking

def count_colors(rgb: Image.Image, cap: int = COLOR_CAP) -> int:
    """Distinct colours on a 96×96 nearest-neighbour sample (cap + 1 means 'more than cap')."""
    small = rgb.resize((96, 96), Image.Resampling.NEAREST) if rgb.width * rgb.height > 96 * 96 else rgb
    colors = small.getcolors(maxcolors=cap)
    return cap + 1 if colors is None else len(colors)


def inspect_bytes(data: bytes, options: CheckOptions = CheckOptions()) -> ImageInfo:
    """Decode bytes and describe them (in the current process, no timeout). Raises ``ImageError``."""
    import imagehash

    if len(data) > options.max_file_bytes:
        raise ImageError(f"file too large: {len(data) / 1e6:.0f} MB > cap of {options.max_file_bytes / 1e6:.0f} MB",
                         "too_large")
    fp = io.BytesIO(data)
    rgb, original = _decode(fp, options.max_pixels, options.min_side)
    gray = rgb.convert("L")  # what imagehash converts to anyway: convert once for both hashes
    try:
        return ImageInfo(width=rgb.width, height=rgb.height, format=original.format or "?", mode=original.mode,
                         frames=int(getattr(original, "n_frames", 1) or 1), bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), phash=str(imagehash.phash(gray)),
                         colors=count_colors(rgb), dhash=str(imagehash.dhash(gray)))
    finally:
        original.close()


def inspect_file(path: str | os.PathLike[str], options: CheckOptions = CheckOptions()) -> ImageInfo | Rejected:
    """Read, decode and describe one file in this process; never raises for a bad file."""
    try:
        size = os.stat(path).st_size
        if size > options.max_file_bytes:
            raise ImageError(f"file too large: {size / 1e6:.0f} MB > cap of {options.max_file_bytes / 1e6:.0f} MB",
                             "too_large")
        with open(path, "rb") as fh:
            data = fh.read(options.max_file_bytes + 1)
        return inspect_bytes(data, options)
    except ImageError as exc:
        return Rejected(exc.reason, exc.kind)
    except OSError as exc:
        return Rejected(f"cannot read file ({exc.strerror or exc})")
    except MemoryError:
        return Rejected("ran out of memory while decoding", "too_large")
    except Exception as exc:  # noqa: BLE001 - last line of defence: a bad file must not kill the batch
        return Rejected(f"corrupt or unreadable image ({type(exc).__name__})")


def info_to_dict(result: ImageInfo | Rejected) -> dict[str, Any]:
    """JSON-friendly form of a check result (used by the worker protocol)."""
    if isinstance(result, ImageInfo):
        return {"ok": asdict(result)}
    return {"rejected": {"reason": result.reason, "kind": result.kind}}


def info_from_dict(data: dict[str, Any]) -> ImageInfo | Rejected:
    if "ok" in data:
        return ImageInfo(**data["ok"])
    rej = data.get("rejected") or {}
    return Rejected(str(rej.get("reason", "unknown error")), str(rej.get("kind", "unreadable")))


class _Worker:
    """One checking subprocess (``python -m core.data.worker``) speaking JSON lines over its stdin/stdout."""

    def __init__(self, options: CheckOptions, task: str | None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        cmd = [sys.executable, "-m", "core.data.worker", json.dumps(asdict(options))]
        if task:
            cmd.append(task)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=str(_PROJECT_ROOT), close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False
        self.job: tuple[int, Path] | None = None
        self.started = 0.0

    def submit(self, task_id: int, path: Path) -> None:
        self.job = (task_id, path)
        self.started = time.monotonic()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": task_id, "path": str(path)}).encode() + b"\n")
        self.proc.stdin.flush()

    def poll(self) -> ImageInfo | Rejected | None:
        """Read what is available; a result, or None if none is complete yet. Raises EOFError if the worker died."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            raise EOFError
        if chunk:
            self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("ready"):
                self.ready = True
                self.started = time.monotonic()  # the clock starts once the worker has finished importing
                continue
            return info_from_dict(msg)
        return None

    def overdue(self, timeout_s: float) -> bool:
        limit = timeout_s if self.ready else timeout_s + STARTUP_TIMEOUT_S
        return time.monotonic() - self.started > limit

    def stop(self, force: bool = False) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            force = True
        if force:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def default_workers() -> int:
    """Worker processes for checking: every usable core, at most 8."""
    from core.settings import cpu_threads

    return max(1, min(8, cpu_threads()))


def check_images(paths: Iterable[str | os.PathLike[str]], *, options: CheckOptions = CheckOptions(),
                 workers: int | None = None, _task: str | None = None) -> Iterator[tuple[Path, ImageInfo | Rejected]]:
    """Check many files in worker processes; yield ``(path, ImageInfo | Rejected)`` as each finishes (any order).

    Paths are pulled from the iterable only as workers become free, so memory stays bounded. A file that takes
    longer than ``options.timeout_s`` or crashes its worker is rejected and the worker is replaced.
    ``workers=0`` checks in this process (no timeout, no isolation; for tiny batches and tests).
    ``_task`` ("module:function") replaces the check in the workers; only tests use it.
    """
    if workers == 0 or os.name == "nt":  # the pool relies on select() over pipes (POSIX)
        fn = _load_task(_task) if _task else inspect_file
        for p in paths:
            yield Path(p), fn(str(p), options)
        return
    yield from _run_pool(iter(paths), options, workers or default_workers(), _task)


def _load_task(spec: str) -> Callable[[str, CheckOptions], ImageInfo | Rejected]:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _run_pool(paths: Iterator[str | os.PathLike[str]], options: CheckOptions, n_workers: int,
              task: str | None) -> Iterator[tuple[Path, ImageInfo | Rejected]]:
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    next_id = 0
    try:
        while True:
            while len(busy) < n_workers:
                nxt = next(paths, None)
                if nxt is None:
                    break
                w = idle.pop() if idle else _Worker(options, task)
                try:
                    w.submit(next_id, Path(nxt))
                except OSError:  # the idle worker died: start a fresh one
                    w.stop(force=True)
                    w = _Worker(options, task)
                    w.submit(next_id, Path(nxt))
                next_id += 1
                busy.append(w)
            if not busy:
                return
            deadline = min(w.started + options.timeout_s + (0 if w.ready else STARTUP_TIMEOUT_S) for w in busy)
            select.select([w.fd for w in busy], [], [], max(0.0, deadline - time.monotonic()))
            for w in list(busy):
                assert w.job is not None
                path = w.job[1]
                healthy = True
                try:
                    result = w.poll()
                except (EOFError, ValueError, TypeError, OSError):
                    result, healthy = Rejected("the image decoder crashed on this file"), False
                if result is None:
                    if not w.overdue(options.timeout_s):
                        continue
                    result, healthy = Rejected(f"decoding took longer than {options.timeout_s:g} s"), False
                busy.remove(w)
                w.job = None
                if healthy:
                    idle.append(w)
                else:
                    w.stop(force=True)
                yield path, result
    finally:
        for w in busy:
            w.stop(force=True)
        for w in idle:
            w.stop()


def check_image(path: str | os.PathLike[str], *, timeout_s: float | None = None,
                options: CheckOptions = CheckOptions()) -> ImageInfo | Rejected:
    """Check one file in a separate process with a timeout (costs about half a second of process start-up)."""
    if timeout_s is not None:
        options = replace(options, timeout_s=timeout_s)
    for _, result in check_images([path], options=options, workers=1):
        return result
    raise AssertionError("unreachable: one path gives one result")  # pragma: no cover
