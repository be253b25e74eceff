"""Every photo through face detection and alignment, once: results are cached by the photo's content.

A cache folder (`<dataset>/faces/` for stored datasets, `<run>/faces/` for folders read in place) holds per photo
`<key>.json` (all faces found, which one is used, a note), `<key>.jpg` (the aligned crop of that face) and
`<key>.<model>.npy` (its embedding by a frozen face model). `key` = the first 16 hex digits of the photo's sha256.
A photo with no face is reported by name; with several faces the largest is used and the note says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from core.storage import write_json_atomic
from core.tasks.faces.detect import CROP_SIZE, Face, align

CACHE_VERSION = 1
_KEY = re.compile(r"^[0-9a-f]{16}$")
_MODEL = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
Progress = Callable[[int, int], None]
BACKSLASH = "\\"


@dataclass(frozen=True)
class FacePhoto:
    """One photo after detection: status ok | no_face | unreadable; the face used (largest unless chosen)."""

    name: str
    label: str
    path: str
    key: str
    status: str
    n_faces: int = 0
    face: Face | None = None
    chosen: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "path": self.path, "key": self.key, "status": self.status,
                "n_faces": self.n_faces, "chosen": self.chosen, "note": self.note,
                "face": self.face.to_dict() if self.face else None}


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class FaceCache:
    """Detections, aligned crops and frozen-model embeddings of photos, keyed by content."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _file(self, key: str, suffix: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"bad cache key {key!r}")
        return self.folder / f"{key}{suffix}"

    def record(self, key: str) -> dict | None:
        try:
            data = json.loads(self._file(key, ".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None

    def crop_path(self, key: str) -> Path:
        return self._file(key, ".jpg")

    def crop(self, key: str) -> Image.Image | None:
        path = self.crop_path(key)
        if not path.is_file():
            return None
        with Image.open(path) as im:
            return im.convert("RGB")

    def put(self, key: str, faces: Sequence[Face], chosen: int, crop: Image.Image | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if crop is not None:
            tmp = self._file(key, ".jpg.tmp")
            crop.save(tmp, format="JPEG", quality=93)
            os.replace(tmp, self.crop_path(key))
        for old in self.folder.glob(f"{key}.*.npy"):  # the face changed: its embeddings are stale
            old.unlink(missing_ok=True)
        write_json_atomic(self._file(key, ".json"), {"version": CACHE_VERSION, "chosen": chosen,
                                                     "faces": [f.to_dict() for f in faces]})

    def embedding(self, key: str, model: str) -> np.ndarray | None:
        if not _MODEL.match(model):
            raise ValueError(f"bad model name {model!r}")
        path = self._file(key, f".{model}.npy")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put_embedding(self, key: str, model: str, vec: np.ndarray) -> None:
        if not _MODEL.match(model):
            raise ValueError(f"bad model name {model!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._file(key, f".{model}.npy.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(vec, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, self._file(key, f".{model}.npy"))

    def remove(self, keys: Sequence[str]) -> list[Path]:
        """Delete every cached file of these photos; returns the files removed."""
        gone = []
        for key in keys:
            if not _KEY.match(key):
                continue
            for path in self.folder.glob(f"{key}.*"):
                path.unlink(missing_ok=True)
                gone.append(path)
        return gone


def _read(path: str) -> tuple[bytes | None, str]:
    try:
        with open(path, "rb") as fh:
            return fh.read(), ""
    except OSError as err:
        return None, f"cannot read the file ({err.strerror or err})"


def _load_image(data: bytes) -> Image.Image:
    from core.data.images import load_rgb

    return load_rgb(data)


def note_for(n_faces: int) -> str:
    if n_faces == 0:
        return "no face found"
    if n_faces > 1:
        return f"{n_faces} faces found; the largest is used (choose another on the Data page)"
    return ""


def detect_photo(name: str, label: str, path: str, cache: FaceCache, detector) -> tuple[FacePhoto, Image.Image | None]:
    """One photo through the cache (or the detector): its FacePhoto and, when it had to be decoded, the photo."""
    data, err = _read(path)
    if data is None:
        return FacePhoto(name, label, path, "", "unreadable", note=err), None
    key = key_of(data)
    rec = cache.record(key)
    img = None
    if rec is None:
        try:
            img = _load_image(data)
        except Exception as exc:  # ImageError and friends: report by name
            return FacePhoto(name, label, path, key, "unreadable", note=str(exc) or type(exc).__name__), None
        faces = detector.detect(img)
        crop = align(img, faces[0], CROP_SIZE) if faces else None
        cache.put(key, faces, 0, crop)
        rec = cache.record(key) or {"chosen": 0, "faces": [f.to_dict() for f in faces]}
    faces = [Face.from_dict(f) for f in rec.get("faces", [])]
    chosen = int(rec.get("chosen", 0))
    if not faces:
        return FacePhoto(name, label, path, key, "no_face", 0, None, 0, note_for(0)), img
    chosen = chosen if 0 <= chosen < len(faces) else 0
    note = note_for(len(faces)) if chosen == 0 else f"{len(faces)} faces found; face {chosen + 1} was chosen"
    return FacePhoto(name, label, path, key, "ok", len(faces), faces[chosen], chosen, note), img


def choose_face(cache: FaceCache, photo: FacePhoto, index: int) -> FacePhoto:
    """Use face `index` of a photo with several faces (re-aligns its crop, drops stale embeddings)."""
    rec = cache.record(photo.key)
    if rec is None:
        raise ValueError(f"{photo.name}: not detected yet")
    faces = [Face.from_dict(f) for f in rec["faces"]]
    if not 0 <= index < len(faces):
        raise ValueError(f"{photo.name}: there is no face {index + 1} (found {len(faces)})")
    data, err = _read(photo.path)
    if data is None:
        raise ValueError(f"{photo.name}: {err}")
    cache.put(photo.key, faces, index, align(_load_image(data), faces[index], CROP_SIZE))
    note = f"{len(faces)} faces found; face {index + 1} was chosen"
    return replace(photo, face=faces[index], chosen=index, note=note)


def detect_all(items: Sequence[dict], cache: FaceCache, detector, embedder=None, on_progress: Progress | None = None,
               should_stop: Callable[[], bool] = lambda: False) -> tuple[list[FacePhoto], dict[str, np.ndarray]]:
    """Detect (and, with a frozen `embedder`, embed) every manifest item {path, label, name}.

    Returns the photos in item order and {key: embedding} for the photos with a face (empty without embedder).
    Stops early (returning what is done) when `should_stop()` says so."""
    photos: list[FacePhoto] = []
    vectors: dict[str, np.ndarray] = {}
    total = len(items)
    for i, item in enumerate(items):
        if should_stop():
            break
        photo, img = detect_photo(str(item.get("name") or Path(item["path"]).name), str(item["label"]),
                                  str(item["path"]), cache, detector)
        photos.append(photo)
        if embedder is not None and photo.ok:
            vec = cache.embedding(photo.key, embedder.name)
            if vec is None:
                if img is None:
                    data, _ = _read(photo.path)
                    img = _load_image(data) if data is not None else None
                if img is not None:
                    crop = cache.crop(photo.key)
                    vec = embedder.embed(img, [photo.face], [crop] if crop is not None else [])[0]
                    cache.put_embedding(photo.key, embedder.name, vec)
            if vec is not None:
                vectors[photo.key] = vec
        if on_progress:
            on_progress(i + 1, total)
    return photos, vectors


def summary_lines(photos: Sequence[FacePhoto]) -> list[str]:
    """One line per photo that needs the user's attention (no face, unreadable, several faces)."""
    return [f"{shown_name(p)}: {p.note}" for p in photos if p.status != "ok" or p.n_faces > 1]


def shown_name(photo: FacePhoto) -> str:
    """'person/photo.jpg': the person and the photo's own file name, whatever folders the name came with (a
    dropped folder's photos are named 'team/person/photo.jpg': the person was shown twice, and the set's folder)."""
    return f"{photo.label}/{PurePosixPath(photo.name.replace(BACKSLASH, '/')).name or photo.name}"


def dataset_items(dataset_id: str) -> list[dict]:
    """The stored dataset's photos as {path, label, name, file} (people = classes)."""
    from core.data.store import load_dataset

    ds = load_dataset(dataset_id)
    return [{"path": str(ds.path(it)), "label": it.label, "name": it.original_name, "file": it.file}
            for it in ds.items]


def detect_dataset(dataset_id: str, detector=None, on_progress: Progress | None = None) -> list[FacePhoto]:
    """Detection and alignment of every photo of a stored faces dataset (cached in its `faces/` folder)."""
    from core.data.store import dataset_dir
    from core.tasks.faces.detect import MTCNNDetector

    cache = FaceCache(dataset_dir(dataset_id) / "faces")
    items = dataset_items(dataset_id)
    todo = [it for it in items if cache.record(key_of(Path(it["path"]).read_bytes())) is None] if detector is None \
        else items
    detector = detector or (MTCNNDetector() if todo else _NoDetector())
    photos, _ = detect_all(items, cache, detector, None, on_progress)
    return photos


class _NoDetector:
    """Stands in when every photo is already cached (so the detector's weights are not even loaded)."""

    name = "cached"

    def detect(self, img: Image.Image) -> list[Face]:  # pragma: no cover - never reached with a full cache
        raise RuntimeError("a photo was not in the cache")
