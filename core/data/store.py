"""Datasets stored by the app: ``datasets_root()/<random id>/{dataset.json, files/<sha256[:16]>.<ext>}``.

User file names are display metadata only; stored files are named from their content hash and detected format.
Imports copy each file into a staging folder, check that copy in worker processes, then keep or delete it, so the
bytes we checked are the bytes we keep. Bad files are skipped and reported; they never abort an import. A new
dataset becomes visible only when complete (its folder is renamed into place after the manifest is written).
Every change rewrites ``dataset.json`` atomically (temporary file, fsync, ``os.replace``) under a per-dataset lock.
The app edits through ``editing``: a dataset runs were trained on, and the built-in sample, stay as they are and the
edit goes into a new copy (its photos hard-linked), so a run always keeps the photos, classes and name it used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.data.archive import ArchiveLimits, _fold, _is_junk, _Refuse, extract_archive, safe_relative_path
from core.data.images import ImageInfo, Rejected, check_images
from core.data.names import clean_label, safe_component
from core.data.scan import ScanItem, class_names, detect_layout, iter_scan
from core.data.splits import SplitConfig
from core.data.usage import RunUse, runs_using
from core.data.validate import (
    Problem,
    Record,
    ValidationConfig,
    ValidationReport,
    analyze,
    apply_splits,
    duplicate_groups,
    problem_from_scan,
)
from core.settings import datasets_root

MANIFEST = "dataset.json"
FORMAT_VERSION = 1
TASK = "classification"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_FILE_RE = re.compile(r"^files/[0-9a-f]{16}(-[0-9]{1,6})?\.[a-z]{3,4}$")
_CHUNK = 1 << 20
ProgressFn = Callable[[int, int], None]
FileSource = bytes | str | os.PathLike[str]


class DatasetError(Exception):
    """A store operation that cannot be done; ``reason`` is plain English."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Item:
    file: str  # "files/<sha256[:16]>.<ext>", relative to the dataset folder
    original_name: str  # display only, never a path
    label: str
    split: str
    sha256: str
    phash: str
    width: int
    height: int
    format: str
    bytes: int
    colors: int
    dhash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "original_name": self.original_name, "class": self.label, "split": self.split,
                "sha256": self.sha256, "phash": self.phash, "dhash": self.dhash, "width": self.width,
                "height": self.height, "format": self.format, "bytes": self.bytes, "colors": self.colors}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Item:
        file = str(d["file"])
        if not _FILE_RE.match(file):
            raise DatasetError(f"corrupt manifest: bad file entry {file!r}")
        return cls(file, str(d.get("original_name", "")), str(d["class"]), str(d.get("split", "train")),
                   str(d["sha256"]), str(d["phash"]), int(d["width"]), int(d["height"]), str(d.get("format", "")),
                   int(d.get("bytes", 0)), int(d.get("colors", 257)), str(d.get("dhash", "")))

    def info(self) -> ImageInfo:
        return ImageInfo(self.width, self.height, self.format, "", 1, self.bytes, self.sha256, self.phash,
                         self.colors, self.dhash)


@dataclass(frozen=True)
class Skipped:
    """A file that was not imported, and why."""

    original_name: str
    reason: str
    kind: str
    label: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"original_name": self.original_name, "reason": self.reason, "kind": self.kind, "class": self.label}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Skipped:
        return cls(str(d["original_name"]), str(d["reason"]), str(d.get("kind", "unreadable")),
                   str(d.get("class", "")))


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    created: str
    updated: str
    classes: tuple[str, ...]
    items: tuple[Item, ...]
    split: SplitConfig
    split_mode: str
    source: dict[str, Any]
    skipped: tuple[Skipped, ...] = ()
    notes: tuple[Problem, ...] = ()  # import-time scan findings (non-image files, stray files...)
    report: dict[str, Any] = field(default_factory=dict)  # ValidationReport.summary()
    root: Path = Path()
    task: str = TASK

    def path(self, item: Item) -> Path:
        """Absolute path of an item's file (validated: always inside this dataset's folder)."""
        if not _FILE_RE.match(item.file):
            raise DatasetError(f"bad file entry {item.file!r}")
        return self.root / item.file

    def records(self) -> list[Record]:
        recs = [Record(it.file, it.label, it.split, it.info(), None, it.original_name) for it in self.items]
        recs += [Record(s.original_name, s.label, None, None, Rejected(s.reason, s.kind)) for s in self.skipped]
        return recs

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "id": self.id, "name": self.name, "created": self.created,
                "updated": self.updated, "task": self.task, "classes": list(self.classes),
                "split": {**self.split.to_dict(), "mode": self.split_mode}, "source": self.source,
                "report": self.report, "skipped": [s.to_dict() for s in self.skipped],
                "notes": [p.to_dict() for p in self.notes], "items": [it.to_dict() for it in self.items]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path) -> Dataset:
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise DatasetError("this dataset was saved by a newer version of the app")
        split = dict(d.get("split") or {})
        notes = tuple(Problem(str(p["kind"]), str(p["severity"]), str(p["message"]), tuple(p.get("files", ())),
                              tuple(p.get("classes", ()))) for p in d.get("notes", ()))
        return cls(id=str(d["id"]), name=str(d["name"]), created=str(d["created"]), updated=str(d.get("updated", "")),
                   classes=tuple(str(c) for c in d["classes"]), items=tuple(Item.from_dict(x) for x in d["items"]),
                   split=SplitConfig.from_dict(split), split_mode=str(split.get("mode", "stratified")),
                   source=dict(d.get("source") or {}),
                   skipped=tuple(Skipped.from_dict(s) for s in d.get("skipped", ())), notes=notes,
                   report=dict(d.get("report") or {}), root=root, task=str(d.get("task", TASK)))


@dataclass(frozen=True)
class DatasetSummary:
    id: str
    name: str
    created: str
    images: int
    classes: tuple[str, ...]
    blocking: bool
    task: str = TASK


@dataclass(frozen=True)
class ImportResult:
    dataset: Dataset
    report: ValidationReport
    imported: int
    skipped: tuple[Skipped, ...]


# ------------------------------------------------------------------------------------------------ file helpers

def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path``, fsync it, then ``os.replace`` it into place (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive per-dataset lock for read-modify-write of the manifest (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _dataset_dir(dataset_id: str) -> Path:
    if not isinstance(dataset_id, str) or not _ID_RE.match(dataset_id):
        raise DatasetError("no such dataset")
    folder = datasets_root() / dataset_id
    if not (folder / MANIFEST).is_file():
        raise DatasetError("no such dataset")
    return folder


def flush_filesystem(folder: Path) -> None:
    """Make every file written under ``folder`` durable with one call (Linux ``syncfs``; else ``os.sync``).

    One flush before the manifest is written replaces an fsync per image (about 4 ms each).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    if hasattr(os, "sync"):
        os.sync()


def _copy_capped(src: Path, dst: Path, max_bytes: int) -> None:
    """Copy at most max_bytes (+1 to detect overflow) into a new file."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        left = max_bytes + 1
        while left > 0 and (chunk := fin.read(min(_CHUNK, left))):
            fout.write(chunk)
            left -= len(chunk)
    if dst.stat().st_size > max_bytes:
        raise OSError(f"file too large (over {max_bytes / 1e6:.0f} MB)")


# ------------------------------------------------------------------------------------------------ ingest

@dataclass(frozen=True)
class _Source:
    original_name: str
    label: str
    split: str | None
    data: FileSource
    move: bool = False  # True only for files in our own temporary extraction folder


@dataclass
class _Ingest:
    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    done: int = 0


def _ingest(folder: Path, sources: Iterable[_Source], total: int, taken: set[str], config: ValidationConfig,
            on_progress: ProgressFn | None) -> _Ingest:
    """Stage, check and keep (or delete) each source; records use the stored file name as ``rel``."""
    staging = folder / f".staging-{secrets.token_hex(4)}"
    staging.mkdir()
    (folder / "files").mkdir(exist_ok=True)
    state = _Ingest()
    pending: dict[str, _Source] = {}
    options = config.check_options()

    def tick() -> None:
        state.done += 1
        if on_progress:
            on_progress(state.done, total)

    def staged() -> Iterator[Path]:
        for n, src in enumerate(sources):
            dst = staging / f"{n:08d}"
            try:
                _stage(src, dst, options.max_file_bytes)
            except OSError as exc:
                state.skipped.append(Skipped(src.original_name, _os_reason(exc), "unreadable", src.label))
                dst.unlink(missing_ok=True)
                tick()
                continue
            pending[str(dst)] = src
            yield dst

    try:
        if on_progress:
            on_progress(0, total)
        results = contextlib.closing(check_images(staged(), options=options, workers=config.workers))
        with results as stream:  # closing the stream stops the worker processes, also on errors
            for path, result in stream:
                src = pending.pop(str(path))
                if isinstance(result, ImageInfo):
                    name = _free_name(result, taken)
                    os.replace(path, folder / name)
                    state.records.append(Record(name, src.label, src.split, result, None, src.original_name))
                else:
                    path.unlink(missing_ok=True)
                    state.skipped.append(Skipped(src.original_name, result.reason, result.kind, src.label))
                tick()
    except BaseException:
        for r in state.records:  # nothing half-imported stays behind
            (folder / r.rel).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    flush_filesystem(folder)
    return state


def _os_reason(exc: OSError) -> str:
    return str(exc) if not exc.strerror else f"cannot read file ({exc.strerror})"


def _stage(src: _Source, dst: Path, max_bytes: int) -> None:
    if isinstance(src.data, bytes | bytearray | memoryview):
        if len(src.data) > max_bytes:
            raise OSError(f"file too large (over {max_bytes / 1e6:.0f} MB)")
        with open(dst, "xb") as fh:
            fh.write(src.data)
    elif src.move:
        os.replace(src.data, dst)
    else:
        _copy_capped(Path(src.data), dst, max_bytes)


def _free_name(info: ImageInfo, taken: set[str]) -> str:
    base = f"files/{info.sha256[:16]}"
    name = f"{base}{info.extension}"
    k = 1
    while name in taken:
        name = f"{base}-{k}{info.extension}"
        k += 1
    taken.add(name)
    return name


def _items(records: Iterable[Record]) -> list[Item]:
    out = []
    for r in records:
        info = r.info
        assert info is not None
        out.append(Item(r.rel, r.display or "", r.label, r.split or "train", info.sha256, info.phash, info.width,
                        info.height, info.format, info.bytes, info.colors, info.dhash))
    return sorted(out, key=lambda it: (it.label, it.original_name, it.file))


def _finish(ds: Dataset, config: ValidationConfig) -> tuple[Dataset, ValidationReport]:
    """Recompute splits (stratified modes) and the report; return the dataset ready to save."""
    records = [Record(it.file, it.label, it.split if ds.split_mode == "folders" else _folder_split(it, ds), it.info(),
                      None, it.original_name) for it in ds.items]
    groups = duplicate_groups(records, config.near_duplicate_distance, config.near_duplicate_dhash)
    if ds.split_mode != "folders":
        records, _ = apply_splits(records, ds.split, groups)
    ds = replace(ds, items=tuple(_items(records)))
    report = dataset_report(ds, config)
    return replace(ds, report=report.summary(), updated=_now()), report


def _folder_split(item: Item, ds: Dataset) -> str | None:
    """In 'folders+stratified' mode the test folder is kept; everything else is re-split."""
    return "test" if ds.split_mode == "folders+stratified" and item.split == "test" else None


def _source_words(source: Mapping[str, Any]) -> str:
    """How the user knows where an import came from: their zip's name, their folder's name, or their upload."""
    name = str(source.get("name") or "")
    if source.get("kind") == "zip" and name:
        return name
    if source.get("kind") == "folder" and name:
        return f"the folder '{name}'"
    return "the upload"


def _no_photos(source: Mapping[str, Any], notes: Sequence[Problem]) -> str:
    """Why an import found no file to check as a photo, naming the user's zip or folder."""
    what = _source_words(source)
    if any(p.kind == "outside_class_folder" for p in notes):
        return (f"{what} has no photos inside class folders: put the photos in one folder per class (e.g. ants/, "
                "bees/), optionally inside train/ and val/.")
    if notes:
        return f"{what} has no photos that can be used; for example {notes[0].message.rstrip('.')}."
    return f"{what} has no photos in it."


def _none_usable(source: Mapping[str, Any], skipped: Sequence[Skipped]) -> str:
    """Why every file of an import was refused, naming the user's zip or folder and one file with its reason."""
    what = _source_words(source)
    if not skipped:
        return f"{what} has no photos in it."
    first = f"{skipped[0].original_name}: {skipped[0].reason}"
    if len(skipped) == 1:
        return f"The only file in {what} cannot be used as a photo ({first})."
    return f"None of the {len(skipped)} files in {what} can be used as photos (e.g. {first})."


def _create(sources: list[_Source], name: str, source: dict[str, Any], classes: Iterable[str], split: SplitConfig,
            config: ValidationConfig, on_progress: ProgressFn | None, notes: Iterable[Problem] = ()) -> ImportResult:
    """Check and store ``sources`` as a new dataset; refused (``DatasetError``, nothing stored) when no file
    turns out to be a usable photo."""
    notes = list(notes)
    if not sources:
        raise DatasetError(_no_photos(source, notes))
    root = datasets_root()
    dataset_id = secrets.token_hex(16)
    work = root / f".importing-{dataset_id}"
    work.mkdir()
    try:
        state = _ingest(work, sources, len(sources), set(), config, on_progress)
        if not state.records:
            raise DatasetError(_none_usable(source, state.skipped))
        groups = duplicate_groups(state.records, config.near_duplicate_distance,
                                  config.near_duplicate_dhash)
        records, mode = apply_splits(state.records, split, groups)
        all_classes = sorted(set(classes) | {r.label for r in records})
        now = _now()
        ds = Dataset(dataset_id, clean_label(name) or "Untitled dataset", now, now, tuple(all_classes),
                     tuple(_items(records)), split, mode, source, tuple(state.skipped), tuple(notes), root=work)
        report = dataset_report(ds, config)
        ds = replace(ds, report=report.summary())
        write_json_atomic(work / MANIFEST, ds.to_dict())
        final = root / dataset_id
        os.rename(work, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ImportResult(replace(ds, root=final), report, len(records), tuple(state.skipped))


# ------------------------------------------------------------------------------------------------ public API

def import_folder(src_dir: str | os.PathLike[str], name: str, *, split: SplitConfig | None = None,
                  config: ValidationConfig | None = None, on_progress: ProgressFn | None = None,
                  source: Mapping[str, Any] | None = None) -> ImportResult:
    """Import ``root/<class>/*`` or ``root/{train,val,test}/<class>/*`` (files are copied, never moved).

    ``source`` replaces the recorded origin (default ``{"kind": "folder", "name": <folder name>}``).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DatasetError("the folder does not exist")
    origin = dict(source) if source is not None else {"kind": "folder", "name": src.name}
    return _import_tree(src, name, origin, split or SplitConfig(), config or ValidationConfig(), on_progress,
                        move=False)


def _import_tree(src: Path, name: str, source: dict[str, Any], split: SplitConfig, config: ValidationConfig,
                 on_progress: ProgressFn | None, *, move: bool, display: Mapping[str, str] | None = None,
                 notes: Iterable[Problem] = ()) -> ImportResult:
    layout = detect_layout(src)
    sources: list[_Source] = []
    notes = list(notes)
    for entry in iter_scan(src, layout):
        if isinstance(entry, ScanItem):
            shown = display.get(entry.rel, entry.rel) if display else entry.rel
            sources.append(_Source(shown, entry.label, entry.split, entry.path, move))
        else:
            notes.append(problem_from_scan(entry))
    return _create(sources, name, source, class_names(layout), split, config, on_progress, notes)


def import_zip(zip_path: str | os.PathLike[str], name: str, *, split: SplitConfig | None = None,
               config: ValidationConfig | None = None, limits: ArchiveLimits | None = None,
               on_progress: ProgressFn | None = None, display_name: str | None = None) -> ImportResult:
    """Extract a zip safely (see ``core.data.archive``) and import it. ``on_progress`` runs twice: entries, images.

    ``display_name`` is the name the user knows the zip by (an upload's own name, when ``zip_path`` is our spooled
    copy): it is recorded as the source and used in messages, never as a path. Raises ``ArchiveError`` when the
    archive as a whole is refused and ``DatasetError`` when it holds no usable photo; refused entries are listed in
    the report.
    """
    shown = clean_label(display_name or "", 255) or Path(zip_path).name
    tmp = datasets_root() / f".extract-{secrets.token_hex(8)}"
    try:
        result = extract_archive(zip_path, tmp, limits=limits or ArchiveLimits(), on_progress=on_progress)
        notes = [Problem(r.kind, "warning", f"{r.name}: {r.reason}. It was not extracted.", (r.name,))
                 for r in result.rejected]
        display = {f.path: f.name for f in result.files}
        return _import_tree(tmp, name, {"kind": "zip", "name": shown}, split or SplitConfig(),
                            config or ValidationConfig(), on_progress, move=True, display=display, notes=notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_files(files: Iterable[tuple[str, FileSource, str]], name: str, *,
                 split: SplitConfig | None = None, config: ValidationConfig | None = None,
                 on_progress: ProgressFn | None = None) -> ImportResult:
    """Import browser uploads: ``(original_name, bytes or path, class_name)``. Names are display-only."""
    sources = [_Source(clean_label(orig, 255), clean_label(label), None, data) for orig, data, label in files]
    bad = [s for s in sources if not s.label]
    if bad:
        raise DatasetError(f"a class name is empty for {bad[0].original_name!r}")
    return _create(sources, name, {"kind": "upload"}, (), split or SplitConfig(), config or ValidationConfig(),
                   on_progress)


def import_uploads(files: Iterable[tuple[str, FileSource]], name: str, *, default_class: str = "",
                   split: SplitConfig | None = None, config: ValidationConfig | None = None,
                   on_progress: ProgressFn | None = None) -> ImportResult:
    """Import a browser folder upload: ``(relative path as the browser sent it, bytes or path)``.

    The browser's paths decide classes and splits exactly as a folder on disk would (``ants/a.jpg``,
    ``photos/train/ants/a.jpg``), but they are only ever used as checked, sanitised components (the same rules as
    zip entries: no ``..``, absolute or drive paths, case collisions refused, OS junk skipped): our code writes every
    file into a temporary folder, imports it like a folder and removes the folder. Files that are not inside any
    folder go to ``default_class`` when one is given. The original names are kept for display only.
    """
    config = config or ValidationConfig()
    default = clean_label(default_class)
    default_part = safe_component(default) if default else ""
    tmp = datasets_root() / f".extract-{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        notes: list[Problem] = []
        display: dict[str, str] = {}
        seen: dict[str, str] = {}  # casefolded path -> "f:" or "d:" + the path as written
        max_bytes = config.check_options().max_file_bytes
        for original, data in files:
            shown = clean_label(original, 255)
            try:
                parts = safe_relative_path(original)
                if len(parts) == 1 and default_part:
                    parts = (default_part, *parts)
                if _is_junk(parts, False):
                    continue
                for depth in range(1, len(parts) + 1):  # claim the file and its folders, case-insensitively
                    spelled = "/".join(parts[:depth])
                    claim = ("f:" if depth == len(parts) else "d:") + spelled
                    previous = seen.get(_fold(spelled))
                    if previous is None:
                        seen[_fold(spelled)] = claim
                    elif previous != claim or claim.startswith("f:"):
                        raise _Refuse("duplicate name (another file has this path, perhaps in other letter case)",
                                      "duplicate_name")
                folder = tmp.joinpath(*parts[:-1])
                folder.mkdir(parents=True, exist_ok=True)
                _stage(_Source(shown, "", None, data), folder / parts[-1], max_bytes)
            except _Refuse as exc:
                notes.append(Problem(exc.kind, "warning", f"{shown}: {exc.reason}. It was not imported.", (shown,)))
                continue
            except OSError as exc:
                notes.append(Problem("unreadable", "warning", f"{shown}: {_os_reason(exc)}. It was not imported.",
                                     (shown,)))
                continue
            display["/".join(parts)] = shown
        return _import_tree(tmp, name, {"kind": "upload"}, split or SplitConfig(), config, on_progress, move=True,
                            display=display, notes=notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(dataset_id: str) -> Dataset:
    """Read a dataset's manifest. Raises ``DatasetError`` for unknown ids (ids are never used unchecked)."""
    folder = _dataset_dir(dataset_id)
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        ds = Dataset.from_dict(data, folder)
    except DatasetError as exc:
        raise DatasetError(f"the dataset's manifest is damaged ({exc.reason})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"the dataset's manifest is damaged ({type(exc).__name__})") from None
    if ds.id != dataset_id:
        raise DatasetError("the dataset's manifest is damaged (id mismatch)")
    return ds


def manifest_stamp(dataset_id: str) -> int:
    """Changes whenever the dataset changes (the manifest's mtime in ns): a cheap cache key for views."""
    return (_dataset_dir(dataset_id) / MANIFEST).stat().st_mtime_ns


def file_path(dataset_id: str, file: str) -> Path:
    """Absolute path of a stored item's file, from its id and ``Item.file`` (both validated)."""
    if not _FILE_RE.match(file):
        raise DatasetError(f"bad file entry {file!r}")
    return _dataset_dir(dataset_id) / file


def list_datasets(task: str | None = None) -> list[DatasetSummary]:
    """All complete datasets (of `task` when given), newest first (damaged ones are left out)."""
    out = []
    for entry in os.scandir(datasets_root()):
        if not _ID_RE.match(entry.name):
            continue
        try:
            ds = load_dataset(entry.name)
        except DatasetError:
            continue
        if task is not None and ds.task != task:
            continue
        out.append(DatasetSummary(ds.id, ds.name, ds.created, len(ds.items), ds.classes,
                                  bool(ds.report.get("blocking", False)), ds.task))
    return sorted(out, key=lambda s: (s.created, s.id), reverse=True)


def dataset_dir(dataset_id: str) -> Path:
    """The dataset's folder (id validated). Tasks keep their own side files here (annotations, masks, crops)."""
    return _dataset_dir(dataset_id)


def set_task(dataset_id: str, task: str) -> Dataset:
    """Mark a stored dataset as belonging to `task` (e.g. 'detection'); its images stay as they are."""
    with _locked(_dataset_dir(dataset_id)):
        ds = load_dataset(dataset_id)
        ds = replace(ds, task=task, updated=_now())
        write_json_atomic(ds.root / MANIFEST, ds.to_dict())
    return ds


def delete_dataset(dataset_id: str) -> None:
    folder = _dataset_dir(dataset_id)
    trash = folder.with_name(f".deleting-{dataset_id}-{secrets.token_hex(4)}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _free_title(name: str, own_id: str) -> str:
    """``name``, or its next free version ('Ants' → 'Ants v2' → 'Ants v3') when another dataset has that name."""
    taken = {d.name.casefold() for d in list_datasets(task=None) if d.id != own_id}
    if name.casefold() not in taken:
        return name
    found = re.fullmatch(r"(.*\S) v(\d+)", name)
    base, n = (found.group(1), int(found.group(2)) + 1) if found else (name, 2)
    while True:
        suffix = f" v{n}"
        candidate = clean_label(base, 100 - len(suffix)).rstrip() + suffix
        if candidate.casefold() not in taken:
            return candidate
        n += 1


def _copy_name(ds: Dataset) -> tuple[str, dict[str, Any]]:
    """The name and source of a copy of ``ds``: a copy of the sample (or of an edited sample) is named for its
    classes, as ``_as_edited`` names it; any other copy is the next version of its name ('Ants' → 'Ants v2')."""
    source = {**ds.source, "copied_from": ds.id}
    if ds.source.get("kind") in ("sample", "edited sample"):
        edited = _as_edited(replace(ds, id="", name="", source={**source, "kind": "sample"}))
        return edited.name, edited.source
    return _free_title(ds.name, ""), source


def _hard_link(src: Path, dst: Path) -> bool:
    """Link ``dst`` to ``src``; False where the file system cannot (then the caller copies)."""
    try:
        os.link(src, dst)
    except OSError:
        return False
    return True


def copy_dataset(dataset_id: str) -> Dataset:
    """A new dataset (new id, named by ``_copy_name``) holding what ``dataset_id`` holds; the original is untouched.

    Stored photos are hard links where the file system allows (they are never changed in place, only removed, so
    the copies stay independent); other files of the folder (a task's side files) are copied.
    """
    src = _dataset_dir(dataset_id)
    root = datasets_root()
    new_id = secrets.token_hex(16)
    work = root / f".importing-{new_id}"
    with _locked(src):
        ds = load_dataset(dataset_id)
        name, source = _copy_name(ds)
        try:
            for folder, dirs, files in os.walk(src):
                dirs[:] = [d for d in dirs if not d.startswith(".")]  # staging folders of an import under way
                rel = Path(folder).relative_to(src)
                (work / rel).mkdir(parents=True, exist_ok=True)
                for file in files:
                    if file.startswith(".") or (rel == Path() and file == MANIFEST):
                        continue
                    if not (rel == Path("files") and _hard_link(src / rel / file, work / rel / file)):
                        shutil.copy2(src / rel / file, work / rel / file)
            now = _now()
            ds = replace(ds, id=new_id, name=name, source=source, created=now, updated=now, root=root / new_id)
            write_json_atomic(work / MANIFEST, ds.to_dict())
            flush_filesystem(work)
            os.rename(work, root / new_id)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return ds


@dataclass(frozen=True)
class EditTarget:
    """Where an edit goes: ``id`` is the dataset to change; when the original had to stay as it was, ``id`` is a new
    copy and ``kept`` the original, with ``runs`` the runs trained on it."""

    id: str
    kept: Dataset | None = None
    runs: tuple[RunUse, ...] = ()


def must_stay(dataset_id: str) -> tuple[bool, list[RunUse]]:
    """Whether ``dataset_id`` must stay as it is (the built-in sample, or a dataset runs were trained on: they keep
    the photos, classes and name they used), and the runs trained on it."""
    used = runs_using(dataset_id)
    return bool(used) or load_dataset(dataset_id).source.get("kind") == "sample", used


@contextlib.contextmanager
def editing(dataset_id: str) -> Iterator[EditTarget]:
    """Where to apply an edit of ``dataset_id``: the dataset itself, or a new copy of it when it must stay as it is
    (``must_stay``). A copy made for an edit that fails (raises) is removed again::

        with store.editing(dataset_id) as target:
            store.add_class(target.id, "sand")
    """
    keep, used = must_stay(dataset_id)
    if not keep:
        yield EditTarget(dataset_id)
        return
    original = load_dataset(dataset_id)
    copy = copy_dataset(dataset_id)
    try:
        yield EditTarget(copy.id, original, tuple(used))
    except BaseException:
        with contextlib.suppress(DatasetError, OSError):
            delete_dataset(copy.id)
        raise


def cleanup_incomplete(older_than_s: float = 6 * 3600) -> int:
    """Remove leftovers of interrupted imports/deletes older than ``older_than_s``; returns how many."""
    removed = 0
    now = time.time()
    for entry in os.scandir(datasets_root()):
        if entry.name.startswith((".importing-", ".deleting-", ".extract-")) and entry.is_dir(follow_symlinks=False):
            if now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed


def dataset_report(dataset: Dataset, config: ValidationConfig | None = None) -> ValidationReport:
    """Full validation report for a stored dataset, from its manifest (no decoding)."""
    return analyze(dataset.records(), classes=dataset.classes, config=config or ValidationConfig(),
                   extra=dataset.notes, layout="stored", split_mode=dataset.split_mode)


def _as_edited(ds: Dataset) -> Dataset:
    """A built-in sample the user edits becomes theirs: named for the classes it now holds, and no longer found as
    the sample, so using the sample again gives a fresh copy (it used to bring back the edited one, still called
    'Sample: textures (brick, grass, gravel)')."""
    source = ds.source or {}
    if source.get("kind") not in ("sample", "edited sample"):
        return ds
    if source["kind"] == "edited sample" and ds.name != source.get("title"):
        return ds  # a name the user chose stays
    shown = ", ".join(ds.classes[:6]) + (", …" if len(ds.classes) > 6 else "")
    title = _free_title(clean_label(f"Edited sample: {source.get('name', 'sample')} ({shown})", 100), ds.id)
    return replace(ds, name=title, source={**source, "kind": "edited sample", "title": title})


def _save(ds: Dataset, config: ValidationConfig | None, *, resplit: bool = True) -> Dataset:
    config = config or ValidationConfig()
    ds = _as_edited(ds)
    if resplit:
        ds, _ = _finish(ds, config)
    else:
        ds = replace(ds, report=dataset_report(ds, config).summary(), updated=_now())
    write_json_atomic(ds.root / MANIFEST, ds.to_dict())
    return ds


def _class_name(name: str) -> str:
    label = clean_label(name)
    if not label:
        raise DatasetError("a class name cannot be empty")
    return label


def rename_class(dataset_id: str, old: str, new: str, *, config: ValidationConfig | None = None) -> Dataset:
    """Rename a class (files stay where they are; only labels change)."""
    folder = _dataset_dir(dataset_id)
    new = _class_name(new)
    with _locked(folder):
        ds = load_dataset(dataset_id)
        if old not in ds.classes:
            raise DatasetError(f"there is no class named {old!r}")
        if any(c.casefold() == new.casefold() and c != old for c in ds.classes):
            raise DatasetError(f"a class named {new!r} already exists")
        classes = tuple(sorted(new if c == old else c for c in ds.classes))
        items = tuple(replace(it, label=new) if it.label == old else it for it in ds.items)
        skipped = tuple(replace(s, label=new) if s.label == old else s for s in ds.skipped)
        return _save(replace(ds, classes=classes, items=items, skipped=skipped), config, resplit=False)


def add_class(dataset_id: str, name: str, *, config: ValidationConfig | None = None) -> Dataset:
    """Add an empty class (images come later with ``add_images``)."""
    folder = _dataset_dir(dataset_id)
    name = _class_name(name)
    with _locked(folder):
        ds = load_dataset(dataset_id)
        if any(c.casefold() == name.casefold() for c in ds.classes):
            raise DatasetError(f"a class named {name!r} already exists")
        return _save(replace(ds, classes=tuple(sorted((*ds.classes, name)))), config, resplit=False)


def add_images(dataset_id: str, label: str, files: Iterable[tuple[str, FileSource]], *,
               split: str | None = None, config: ValidationConfig | None = None,
               on_progress: ProgressFn | None = None) -> ImportResult:
    """Add images (e.g. camera photos) to a class, creating the class if needed.

    ``split``: for datasets split by folders the new images go to ``split`` or 'train'; otherwise the stratified
    split is recomputed (stable: few existing images move).
    """
    folder = _dataset_dir(dataset_id)
    label = _class_name(label)
    if split not in (None, "train", "val", "test"):
        raise DatasetError(f"unknown split {split!r}")
    sources = [_Source(clean_label(orig, 255), label, split or "train", data) for orig, data in files]
    config = config or ValidationConfig()
    with _locked(folder):
        ds = load_dataset(dataset_id)
        existing = next((c for c in ds.classes if c.casefold() == label.casefold()), None)
        label = existing or label
        sources = [replace(s, label=label) for s in sources]
        state = _ingest(folder, sources, len(sources), {it.file for it in ds.items}, config, on_progress)
        new_items = _items(state.records)
        ds = replace(ds, classes=tuple(sorted({*ds.classes, label})), items=ds.items + tuple(new_items),
                     skipped=ds.skipped + tuple(state.skipped))
        ds = _save(ds, config, resplit=ds.split_mode != "folders")
        return ImportResult(ds, dataset_report(ds, config), len(new_items), tuple(state.skipped))


def drop_files(dataset_id: str, files: Iterable[str], *, config: ValidationConfig | None = None) -> Dataset:
    """Remove items by their ``file`` value (and dismiss skipped-file notices by original name)."""
    folder = _dataset_dir(dataset_id)
    wanted = set(files)
    with _locked(folder):
        ds = load_dataset(dataset_id)
        gone = [it for it in ds.items if it.file in wanted]
        keep = tuple(it for it in ds.items if it.file not in wanted)
        skipped = tuple(s for s in ds.skipped if s.original_name not in wanted)
        notes = tuple(p for p in ds.notes if not set(p.files) & wanted)
        ds = _save(replace(ds, items=keep, skipped=skipped, notes=notes), config, resplit=ds.split_mode != "folders")
        still_used = {it.file for it in keep}
        for it in gone:
            if it.file not in still_used:
                ds.path(it).unlink(missing_ok=True)
        return ds


def remove_class(dataset_id: str, name: str, *, config: ValidationConfig | None = None) -> Dataset:
    """Remove a class with all its images (their files are deleted) and every notice naming it."""
    folder = _dataset_dir(dataset_id)
    with _locked(folder):
        ds = load_dataset(dataset_id)
        if name not in ds.classes:
            raise DatasetError(f"there is no class named {name!r}")
        gone = [it for it in ds.items if it.label == name]
        keep = tuple(it for it in ds.items if it.label != name)
        gone_files = {it.file for it in gone}
        notes = tuple(p for p in ds.notes if name not in p.classes and not set(p.files) & gone_files)
        ds = _save(replace(ds, classes=tuple(c for c in ds.classes if c != name), items=keep, notes=notes,
                           skipped=tuple(s for s in ds.skipped if s.label != name)),
                   config, resplit=ds.split_mode != "folders")
        still_used = {it.file for it in keep}
        for it in gone:
            if it.file not in still_used:
                ds.path(it).unlink(missing_ok=True)
        return ds


def relabel_files(dataset_id: str, files: Iterable[str], label: str, *,
                  config: ValidationConfig | None = None) -> Dataset:
    """Move items (by their ``file`` value) to another existing class; their split stays as it is."""
    folder = _dataset_dir(dataset_id)
    wanted = set(files)
    with _locked(folder):
        ds = load_dataset(dataset_id)
        if label not in ds.classes:
            raise DatasetError(f"there is no class {label!r} in this dataset")
        items = tuple(replace(it, label=label) if it.file in wanted else it for it in ds.items)
        return _save(replace(ds, items=items), config, resplit=False)


def class_weights(dataset: Dataset | Mapping[str, Any]) -> dict[str, float]:
    """Inverse-frequency weights over training images, in class order: n_train / (n_classes * n_class).

    Classes without training images get 0.0. A perfectly balanced dataset gets 1.0 everywhere.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.from_dict(dataset, Path())
    counts = {c: 0 for c in ds.classes}
    for it in ds.items:
        if it.split == "train" and it.label in counts:
            counts[it.label] += 1
    present = [c for c, n in counts.items() if n > 0]
    total = sum(counts.values())
    return {c: (total / (len(present) * n) if n else 0.0) for c, n in counts.items()}
