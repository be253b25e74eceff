"""File-name rules shared by archive extraction, folder scanning and the store (no I/O here)."""

from __future__ import annotations

import re
import unicodedata

#: Extensions we try to decode as images (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff",
     ".heic", ".heif", ".hif", ".avif"}
)

#: What every photo uploader in the app lets through (Streamlit's ``type=``): the extensions above, without the dot.
PHOTO_UPLOAD_TYPES: tuple[str, ...] = tuple(sorted(ext[1:] for ext in IMAGE_EXTENSIONS))

#: Image formats people upload that we do not decode, with a hint for the user.
UNSUPPORTED_IMAGE_EXTENSIONS = {
    ".svg": "SVG", ".eps": "EPS", ".ps": "PostScript",
    ".pdf": "PDF", ".psd": "PSD", ".ico": "ICO", ".jp2": "JPEG 2000", ".j2k": "JPEG 2000", ".jxl": "JPEG XL",
    ".cr2": "RAW", ".cr3": "RAW", ".nef": "RAW", ".arw": "RAW", ".dng": "RAW", ".orf": "RAW", ".rw2": "RAW",
    ".raf": "RAW", ".tga": "TGA", ".pcx": "PCX", ".ppm": "PPM", ".pgm": "PGM", ".pbm": "PBM", ".xcf": "XCF",
}

#: Archive extensions: never opened recursively.
ARCHIVE_EXTENSIONS = frozenset({".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".tbz2", ".txz"})

_JUNK_DIRS = frozenset({"__macosx", ".ipynb_checkpoints", "@eadir", "$recycle.bin", "system volume information"})
_JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".localized", "icon\r"})
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
)
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')
MAX_COMPONENT_BYTES = 180


def is_junk_dir(name: str) -> bool:
    """OS/tool clutter folders (``__MACOSX``, ``.ipynb_checkpoints``) and hidden folders."""
    return name.lower() in _JUNK_DIRS or name.startswith(".")


def is_junk_file(name: str) -> bool:
    """OS clutter files (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._*``) and hidden files."""
    return name.lower() in _JUNK_FILES or name.startswith(".") or name.startswith("._")


def extension(name: str) -> str:
    """Lower-case extension with the dot ('' when there is none)."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def safe_component(part: str) -> str:
    """Map one user-supplied path component to a harmless file-system name ('' when nothing usable is left).

    Callers must reject ``..`` *before* calling this; here it simply maps to ''.
    """
    part = unicodedata.normalize("NFC", part)
    part = _BAD_CHARS.sub("_", part).strip().rstrip(". ")
    if part in ("", ".", ".."):
        return ""
    stem = part.split(".", 1)[0].lower()
    if stem in _WINDOWS_RESERVED:
        part = "_" + part
    encoded = part.encode("utf-8")
    if len(encoded) > MAX_COMPONENT_BYTES:
        ext = extension(part)
        ext = ext if len(ext) <= 10 else ""
        head = encoded[: MAX_COMPONENT_BYTES - len(ext.encode())].decode("utf-8", "ignore")
        part = head + ext
    return part


def clean_label(name: str, max_len: int = 100) -> str:
    """A class or dataset name made safe to store and show: NFC, no control characters, trimmed ('' if empty)."""
    name = unicodedata.normalize("NFC", str(name))
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return " ".join(name.split())[:max_len]
