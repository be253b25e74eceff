"""Evaluate a detection run: on its own validation images (saved as evaluation.json for the Results tab) or on a
folder with annotations. Metrics from torchmetrics (see `metrics`); predictions are kept per image (boxes in pixels
of the original image, scores ≥ 0.05) so the gallery can be re-matched at any threshold without re-running."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core import runs
from core.storage import read_json, write_json_atomic
from core.tasks.detection.data import load_folder
from core.tasks.detection.metrics import match_image, mean_average_precision
from core.tasks.detection.predict import Detector, image_tensor, load_detector

EVAL_FILE = "evaluation.json"
KEEP_SCORE = 0.05
Progress = Callable[[str, int, int], None] | None


def _weights_sha(run_dir: Path) -> str:
    path = run_dir / "checkpoints" / "best.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def evaluate_items(detector: Detector, items: list[dict], classes: list[str], on_progress: Progress = None) -> dict:
    """mAP, per class, PR curve and per-image predictions of `detector` on manifest-like items
    ({path, name, boxes, labels}); labels that are not in `classes` are reported and left out."""
    index = {c: k for k, c in enumerate(classes, start=1)}
    preds, targets, images, bad, unknown = [], [], [], [], set()
    seconds = 0.0
    for n, it in enumerate(items):
        try:
            image = image_tensor(it["path"])
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the evaluation
            bad.append({"name": it.get("name", ""), "reason": str(getattr(err, "reason", err))})
            continue
        t0 = time.perf_counter()
        out = detector.raw(image)
        seconds += time.perf_counter() - t0
        keep = out["scores"] >= KEEP_SCORE
        pred = {"boxes": out["boxes"][keep], "scores": out["scores"][keep], "labels": out["labels"][keep]}
        gt_boxes, gt_labels = [], []
        for b, lbl in zip(it.get("boxes") or [], it.get("labels") or [], strict=True):
            if lbl in index:
                gt_boxes.append(b)
                gt_labels.append(index[lbl])
            else:
                unknown.add(lbl)
        target = {"boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(gt_labels, dtype=torch.int64)}
        preds.append(pred)
        targets.append(target)
        images.append({"name": it.get("name", ""), "path": it["path"], "width": int(image.shape[-1]),
                       "height": int(image.shape[-2]),
                       "gt": {"boxes": target["boxes"].tolist(), "labels": gt_labels},
                       "pred": {"boxes": [[round(v, 1) for v in b] for b in pred["boxes"].tolist()],
                                "scores": [round(v, 4) for v in pred["scores"].tolist()],
                                "labels": pred["labels"].tolist()}})
        if on_progress:
            on_progress("predicting", n + 1, len(items))
    result = mean_average_precision(preds, targets, classes, curve=True) if preds else {
        "map50": 0.0, "map": 0.0, "map75": None, "mar100": None, "per_class": [], "pr_curve": []}
    for img in images:
        m = match_image(img["pred"], img["gt"], 0.5)
        img["errors_at_0.5"] = len(m["misses"]) + len(m["false_positives"])
    return {**result, "classes": classes, "n_images": len(images), "n_boxes": sum(len(t["labels"]) for t in targets),
            "bad_images": bad, "unknown_classes": sorted(unknown),
            "seconds_per_image": round(seconds / max(1, len(images)), 4), "images": images}


def evaluate_run(run_dir: str | os.PathLike, on_progress: Progress = None) -> dict:
    """The run's best weights on its validation images; saved as evaluation.json (with the weights' hash)."""
    run_dir = Path(run_dir)
    detector = load_detector(run_dir)
    manifest = runs.load_dataset(run_dir)
    items = [it for it in manifest["items"] if it.get("split") == "val"]
    result = evaluate_items(detector, items, list(manifest["classes"]), on_progress)
    result.update(split="val", weights_sha256=_weights_sha(run_dir), created=time.time())
    write_json_atomic(run_dir / EVAL_FILE, result)
    return result


def load_evaluation(run_dir: str | os.PathLike) -> dict | None:
    """evaluation.json, with `stale` set when the best weights changed since."""
    run_dir = Path(run_dir)
    data = read_json(run_dir / EVAL_FILE)
    if not isinstance(data, dict):
        return None
    data["stale"] = data.get("weights_sha256") != _weights_sha(run_dir)
    return data


def evaluate_folder(model_path: str | os.PathLike, folder: str | os.PathLike, annotations: str | None = None,
                    on_progress: Progress = None) -> dict:
    """A run or an export on every image of a folder with annotations (COCO / VOC / YOLO, found or named)."""
    detector = load_detector(model_path)
    ds = load_folder(folder, annotations)
    items = [{"path": a.path, "name": a.name, "boxes": a.boxes, "labels": a.labels} for a in ds.images]
    result = evaluate_items(detector, items, detector.classes, on_progress)
    result["problems"] = [p.to_dict() for p in ds.problems]
    result["split"] = "all"
    return result
