"""Deleting a person everywhere: their photos, crops and embeddings leave the dataset, every gallery, every cache,
every evaluation, report and export of the runs that enrolled them; the report says which runs were trained on
them (a fine-tuned network keeps what it learned from their photos until that run is deleted)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core import runs
from core.storage import read_json, write_json_atomic
from core.tasks.faces import gallery as gal
from core.tasks.faces import threshold as thr
from core.tasks.faces.embed import is_face_model
from core.tasks.faces.enrol import FaceCache
from core.tasks.faces.evaluate import EVAL_FILE
from core.tasks.faces.train import PHOTOS_FILE


@dataclass
class DeletionReport:
    person: str
    photos_removed: int = 0
    files_removed: int = 0
    galleries_updated: list[str] = field(default_factory=list)
    trained_on: list[str] = field(default_factory=list)  # fine-tuned runs whose network saw the photos
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        parts = [f"Removed {self.photos_removed} photos and {self.files_removed} crops/embeddings of this person"]
        if self.galleries_updated:
            parts.append(f"removed them from the gallery of {len(self.galleries_updated)} runs "
                         f"({', '.join(self.galleries_updated)})")
        if self.trained_on:
            parts.append(f"these fine-tuned runs were trained on their photos and keep what the network learned "
                         f"until you delete them: {', '.join(self.trained_on)}")
        return "; ".join(parts) + "."


def _keys_of(dataset_id: str, person: str) -> tuple[list[str], list[str]]:
    from core.data.store import load_dataset

    ds = load_dataset(dataset_id)
    items = [it for it in ds.items if it.label == person]
    return [it.sha256[:16] for it in items], [it.file for it in items]


def _scrub_run(run_dir: Path, person: str, keys: set[str], report: DeletionReport) -> None:
    """Remove a person from one faces run folder (gallery, manifest, photo list, caches, evaluations, exports)."""
    try:
        cfg = runs.load_config(run_dir)
        manifest = runs.load_dataset(run_dir)
    except runs.RunError:
        return
    photos = read_json(run_dir / PHOTOS_FILE, {}) or {}
    listed = [p for p in photos.get("photos", []) if p.get("label") == person or p.get("key") in keys]
    run_keys = keys | {p["key"] for p in listed if p.get("key")}
    in_manifest = person in manifest.get("classes", []) or any(it.get("label") == person for it in manifest["items"])
    try:
        g, meta = gal.load(run_dir)
    except (FileNotFoundError, ValueError):
        g, meta = None, {}
    in_gallery = g is not None and (person in g.people or bool(set(g.keys) & run_keys))
    if not (in_manifest or in_gallery or listed):
        return
    if g is not None and in_gallery:
        drop = {person} | {g.people[int(lab)] for k, lab in zip(g.keys, g.labels, strict=False) if k in run_keys}
        g = g.without(drop)
        extra = {}
        if is_face_model(cfg.backbone) and len(g.people) >= 2:  # frozen: choose the threshold again without them
            cal, scores = thr.calibrate_gallery(g, float(meta.get("target_far", thr.DEFAULT_FAR)))
            extra = {"threshold": cal.threshold, "verify_threshold": cal.verify_threshold,
                     "calibration": cal.to_dict(), "roc": thr.roc(scores),
                     "scores": {"genuine": [], "impostor": []}}
        else:
            extra = {"scores": {"genuine": [], "impostor": []}, "roc": meta.get("roc", []),
                     "note": "A person was deleted after the threshold was chosen."}
        gal.save(g, run_dir, extra)
        if is_face_model(cfg.backbone):
            runs.save_weights(run_dir, g.tensors(), {"people": list(g.people), "kind": "gallery",
                                                     "threshold": extra.get("threshold", meta.get("threshold"))})
        report.galleries_updated.append(run_dir.name)
    if not is_face_model(cfg.backbone) and in_manifest:
        report.trained_on.append(run_dir.name)
        for name in ("last.pt", "last.prev.pt"):  # the resumable checkpoint holds one ArcFace centre per person
            path = run_dir / "checkpoints" / name
            if path.exists():
                path.unlink()
                report.files_removed += 1
    manifest["items"] = [it for it in manifest["items"] if it.get("label") != person]
    manifest["classes"] = [c for c in manifest.get("classes", []) if c != person]
    manifest["removed_people"] = int(manifest.get("removed_people", 0)) + 1
    write_json_atomic(run_dir / "dataset.json", manifest)
    if photos:
        photos["photos"] = [p for p in photos.get("photos", []) if p not in listed]
        write_json_atomic(run_dir / PHOTOS_FILE, photos)
    report.files_removed += len(FaceCache(run_dir / "faces").remove(sorted(run_keys)))
    _scrub_log(run_dir, person, {p["name"] for p in listed})
    best = read_json(run_dir / "checkpoints" / "best.json")
    if isinstance(best, dict) and person in best.get("people", []):
        best["people"] = [p for p in best["people"] if p != person]
        write_json_atomic(run_dir / "checkpoints" / "best.json", best)
    for name in (EVAL_FILE, "report.html"):  # they show this person's photos and names: computed again on demand
        if (run_dir / name).exists():
            (run_dir / name).unlink()
            report.files_removed += 1
    exports = run_dir / "exports"
    if exports.is_dir():
        for folder in exports.iterdir():
            if (folder / "manifest.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                report.notes.append(f"export {run_dir.name}/{folder.name} removed (export again)")


def _scrub_log(run_dir: Path, person: str, names: set[str]) -> None:
    """Take the person's name and photo names out of the run's event log (classes lists, notices)."""
    import json

    from core.storage import write_bytes_atomic

    path = run_dir / "events.jsonl"
    if not path.is_file():
        return
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event.get("classes"), list):
            event["classes"] = [c for c in event["classes"] if c != person]
        for key in ("message", "reason"):
            text = event.get(key)
            if isinstance(text, str) and (person in text or any(n in text for n in names)):
                event[key] = "; ".join(part for part in text.split("; ") if person not in part
                                       and not any(n in part for n in names)) or "(about a deleted person)"
        lines.append(json.dumps(event, default=str))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def delete_person(dataset_id: str, person: str, runs_dir: Path | None = None) -> DeletionReport:
    """Delete `person` from the stored dataset and from every faces run that enrolled them."""
    from core.data.store import dataset_dir, remove_class

    report = DeletionReport(person)
    keys, files = _keys_of(dataset_id, person)
    report.files_removed += len(FaceCache(dataset_dir(dataset_id) / "faces").remove(keys))
    remove_class(dataset_id, person)
    report.photos_removed = len(files)
    for run_dir in runs.list_runs(runs_dir):
        if runs.read_json_config(run_dir).get("task") != "faces":
            continue
        manifest = read_json(run_dir / "dataset.json", {}) or {}
        source = manifest.get("source") or {}
        same_dataset = source.get("kind") == "store" and source.get("id") == dataset_id
        if same_dataset or set(keys) & _gallery_keys(run_dir):
            _scrub_run(run_dir, person, set(keys), report)
    return report


def _gallery_keys(run_dir: Path) -> set[str]:
    return set((read_json(run_dir / gal.META, {}) or {}).get("keys", []))
