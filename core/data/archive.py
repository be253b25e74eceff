"""Safe archive extraction: our code writes every file, entry by entry, under generated safe paths.

Refused entries (unsafe paths, links, duplicates, nested archives, encrypted...) are listed with a reason; the archive
as a whole is refused (``ArchiveError``) when it is not a zip, is a tar/rar/7z, has too many entries, would expand
beyond the size cap, has overlapping entries (CVE-2024-0450 style bombs) or an entry decompresses at a bomb ratio.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.data.names import ARCHIVE_EXTENSIONS, extension, is_junk_dir, is_junk_file, safe_component

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 16


class ArchiveError(Exception):
    """The whole archive is refused; ``reason`` is plain English."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while extracting. Sizes are counted from the bytes actually written, not from headers."""

    max_entries: int = 120_000
    max_total_bytes: int = 8 * 1024**3
    max_entry_bytes: int = 200 * 1024**2
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1024**2  # the ratio rule applies once an entry has produced this much
    max_depth: int = 12


@dataclass(frozen=True)
class ExtractedFile:
    name: str  # the entry name as stored in the archive (display only)
    path: str  # our safe relative path under the target, '/'-separated
    size: int


@dataclass(frozen=True)
class RejectedEntry:
    name: str
    reason: str
    kind: str  # unsafe_path | link | special_file | duplicate_name | nested_archive | encrypted | too_large | corrupt


@dataclass(frozen=True)
class ExtractResult:
    target: Path
    files: tuple[ExtractedFile, ...]
    rejected: tuple[RejectedEntry, ...]
    skipped_junk: tuple[str, ...]


class _Refuse(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


def sniff_archive(path: Path) -> str:
    """'zip', 'tar', 'gzip', 'bzip2', 'xz', 'rar', '7z', 'zstd' or 'unknown' from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    for magic, name in ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"Rar!", "rar"),
                        (b"7z\xbc\xaf\x27\x1c", "7z"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    try:
        return "tar" if tarfile.is_tarfile(path) else "unknown"
    except OSError:
        return "unknown"


def extract_archive(archive: str | os.PathLike[str], target: str | os.PathLike[str], *,
                    limits: ArchiveLimits = ArchiveLimits(),
                    on_progress: Callable[[int, int], None] | None = None) -> ExtractResult:
    """Extract a zip into ``target`` (created, must be empty). Any other archive type raises ``ArchiveError``."""
    path = Path(archive)
    kind = sniff_archive(path)
    if kind == "zip" or (kind == "unknown" and zipfile.is_zipfile(path)):
        return extract_zip(path, target, limits=limits, on_progress=on_progress)
    if kind in ("tar", "gzip", "bzip2", "xz", "zstd"):
        raise ArchiveError(f"{kind} archives are not accepted; please upload a .zip file instead")
    if kind in ("rar", "7z"):
        raise ArchiveError(f"{kind.upper()} archives are not supported; please upload a .zip file instead")
    raise ArchiveError("this file is not a zip archive")


def extract_zip(zip_path: str | os.PathLike[str], target: str | os.PathLike[str], *,
                limits: ArchiveLimits = ArchiveLimits(),
                on_progress: Callable[[int, int], None] | None = None) -> ExtractResult:
    """Extract a zip safely into ``target`` (created if missing; must be empty). See the module docstring."""
    dest = Path(target)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ArchiveError("internal error: extraction target is not empty")
    root = dest.resolve()
    _check_entry_count(Path(zip_path), limits)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"this file is not a valid zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ArchiveError(f"too many entries: {len(infos):,} > {limits.max_entries:,}")
        claimed = sum(i.file_size for i in infos)
        if claimed > limits.max_total_bytes:
            raise ArchiveError(f"would expand to {claimed / 1e9:.1f} GB > cap of {limits.max_total_bytes / 1e9:.1f} GB")
        _check_layout(zf, infos)
        free = shutil.disk_usage(root).free
        if claimed > free:
            raise ArchiveError(f"not enough disk space: needs {claimed / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
        writer = _Writer(root, limits)
        try:
            for n, info in enumerate(infos, 1):
                writer.entry(zf, info)
                if on_progress is not None:
                    on_progress(n, len(infos))
        except ArchiveError:
            writer.undo()
            raise
        return ExtractResult(dest, tuple(writer.files), tuple(writer.rejected), tuple(writer.junk))


def _check_entry_count(path: Path, limits: ArchiveLimits) -> None:
    """Refuse archives declaring too many entries before zipfile builds its (large) in-memory directory."""
    end_rec = getattr(zipfile, "_EndRecData", None)
    if end_rec is None:  # pragma: no cover - private helper gone in a future Python
        return
    try:
        with open(path, "rb") as fh:
            rec = end_rec(fh)
    except (OSError, struct.error, zipfile.BadZipFile):
        return
    if rec and rec[4] > limits.max_entries:
        raise ArchiveError(f"too many entries: {rec[4]:,} > {limits.max_entries:,}")


def _check_layout(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Every entry's local header + data must sit in its own byte range before the central directory.

    Overlapping entries are how 'quoted overlap' zip bombs reuse one compressed stream many times; Python 3.11.7's
    zipfile does not check this (CVE-2024-0450).
    """
    fp = zf.fp
    assert fp is not None
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        fp.seek(info.header_offset)
        raw = fp.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise ArchiveError(f"corrupt zip: entry {info.filename!r} points past the end of the file")
        fields = _LOCAL_HEADER.unpack(raw)
        if fields[0] != _LOCAL_MAGIC:
            raise ArchiveError(f"corrupt zip: bad local header for {info.filename!r}")
        start = info.header_offset
        end = start + _LOCAL_HEADER.size + fields[10] + fields[11] + info.compress_size
        spans.append((start, end, info.filename))
    spans.sort()
    for (_, e1, n1), (s2, _, n2) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise ArchiveError(f"malformed zip (possible zip bomb): entries {n1!r} and {n2!r} overlap")
    cd_start = getattr(zf, "start_dir", None)
    if spans and cd_start is not None and spans[-1][1] > cd_start:
        raise ArchiveError(f"malformed zip (possible zip bomb): entry {spans[-1][2]!r} overlaps the directory")


def safe_relative_path(name: str, max_depth: int = 12) -> tuple[str, ...]:
    """Map an archive entry name to safe path components, or raise ``_Refuse`` for unsafe names."""
    if "\x00" in name:
        raise _Refuse("name contains a NUL byte", "unsafe_path")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm) or norm.startswith("//"):
        raise _Refuse("absolute path", "unsafe_path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _Refuse("path goes outside the folder ('..')", "unsafe_path")
    if len(parts) > max_depth:
        raise _Refuse(f"folders nested deeper than {max_depth} levels", "unsafe_path")
    safe = tuple(safe_component(p) for p in parts)
    if not safe or any(not p for p in safe):
        raise _Refuse("empty or unusable name", "unsafe_path")
    return safe


class _Writer:
    """Creates directories and files under ``root`` for accepted entries and remembers what it made."""

    def __init__(self, root: Path, limits: ArchiveLimits) -> None:
        self.root, self.limits = root, limits
        self.files: list[ExtractedFile] = []
        self.rejected: list[RejectedEntry] = []
        self.junk: list[str] = []
        self.seen: dict[str, str] = {}  # casefolded path -> first entry name (files and folders)
        self.made_dirs: list[Path] = []
        self.total = 0

    def entry(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        name = info.filename
        try:
            parts = safe_relative_path(name, self.limits.max_depth)
            if _is_junk(parts, info.is_dir()):
                self.junk.append(name)
                return
            self._check_kind(info)
            if info.is_dir():
                self._claim(parts, name, is_dir=True)
                return
            self._claim(parts, name, is_dir=False)
            size = self._write(zf, info, parts)
        except _Refuse as exc:
            self.rejected.append(RejectedEntry(name, exc.reason, exc.kind))
            return
        self.files.append(ExtractedFile(name, "/".join(parts), size))

    def _check_kind(self, info: zipfile.ZipInfo) -> None:
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise _Refuse("symbolic link (links are never extracted)", "link")
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise _Refuse("special file (device, pipe or socket)", "special_file")
        if info.flag_bits & 0x1:
            raise _Refuse("encrypted (password-protected) entry", "encrypted")
        if not info.is_dir() and extension(info.filename) in ARCHIVE_EXTENSIONS:
            raise _Refuse("archive inside the archive was not opened; extract it and upload its contents",
                          "nested_archive")
        if info.file_size > self.limits.max_entry_bytes:
            raise _Refuse(f"file too large ({info.file_size / 1e6:.0f} MB)", "too_large")

    def _claim(self, parts: tuple[str, ...], name: str, *, is_dir: bool) -> None:
        """Reserve the path (and its folders) case-insensitively; duplicates and case collisions are refused."""
        for depth in range(1, len(parts) + 1):
            key = _fold("/".join(parts[:depth]))
            spelled = "/".join(parts[:depth])
            last = depth == len(parts)
            kind = "d" if (is_dir or not last) else "f"
            previous = self.seen.get(key)
            if previous is None:
                self.seen[key] = kind + spelled
                continue
            if previous[1:] != spelled:
                raise _Refuse(f"name differs only in letter case from {previous[1:]!r}", "duplicate_name")
            if previous[0] != kind or (last and kind == "f"):
                raise _Refuse("duplicate name (an entry with this path already exists)", "duplicate_name")

    def _write(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, parts: tuple[str, ...]) -> int:
        folder = self._mkdirs(parts[:-1])
        path = folder / parts[-1]
        if not str(path.resolve(strict=False)).startswith(str(self.root) + os.sep):
            raise _Refuse("path goes outside the folder", "unsafe_path")  # defence in depth; should not happen
        written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise _Refuse(f"cannot create file ({exc.strerror})", "duplicate_name") from None
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    self.total += len(chunk)
                    self._check_sizes(info, written)
                    out.write(chunk)
        except _Refuse:
            path.unlink(missing_ok=True)
            raise
        except ArchiveError:
            path.unlink(missing_ok=True)
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            path.unlink(missing_ok=True)
            raise _Refuse(f"corrupt entry ({type(exc).__name__}: {exc})", "corrupt") from None
        return written

    def _check_sizes(self, info: zipfile.ZipInfo, written: int) -> None:
        lim = self.limits
        if written > lim.ratio_floor_bytes and written > max(info.compress_size, 1) * lim.max_ratio:
            raise ArchiveError(f"zip bomb: {info.filename!r} expands more than {lim.max_ratio:g}× its packed size")
        if written > lim.max_entry_bytes:
            raise _Refuse(f"file too large (over {lim.max_entry_bytes / 1e6:.0f} MB)", "too_large")
        if self.total > lim.max_total_bytes:
            raise ArchiveError(f"archive expands beyond the cap of {lim.max_total_bytes / 1e9:.1f} GB")

    def _mkdirs(self, parts: tuple[str, ...]) -> Path:
        folder = self.root
        for part in parts:
            folder = folder / part
            try:
                os.mkdir(folder, 0o755)
                self.made_dirs.append(folder)
            except FileExistsError:
                if folder.is_symlink() or not folder.is_dir():
                    raise _Refuse("path conflicts with a file of the same name", "duplicate_name") from None
        return folder

    def undo(self) -> None:
        """Remove everything this writer created (after the archive as a whole was refused)."""
        for f in self.files:
            (self.root / f.path).unlink(missing_ok=True)
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self.files.clear()


def _fold(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def write_uploaded_files(files: Iterable[tuple[str, bytes]], target: Path) -> list[tuple[str, str]]:
    """Write files a browser uploaded as a folder ((relative path as the browser sent it, bytes)) under `target`,
    each under checked, sanitised components (the zip-entry rules: no ``..``, absolute or drive paths); OS junk
    is skipped. Returns (path as sent, reason) for each file refused."""
    refused = []
    for original, data in files:
        try:
            parts = safe_relative_path(original)
        except _Refuse as exc:
            refused.append((original, exc.reason))
            continue
        if _is_junk(parts, False):
            continue
        path = Path(target).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return refused


def _is_junk(parts: tuple[str, ...], is_dir: bool) -> bool:
    dirs = parts if is_dir else parts[:-1]
    if any(is_junk_dir(p) for p in dirs):
        return True
    return not is_dir and is_junk_file(parts[-1])
