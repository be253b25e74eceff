"""Evaluate a segmentation run (or export) on labelled images: per-class IoU, mIoU over the known classes, pixel
accuracy, the class confusion matrix and the worst images (by their own mIoU). Masks are compared at the image's
full size; void (the ignore value) and values that are not a class are left out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core import runs
from core.storage import read_json, write_json_atomic
from core.tasks.segmentation import metrics
from core.tasks.segmentation.data import IGNORE, Pair, SegDataError, load_mask, scan_folder
from core.tasks.segmentation.predict import SegPredictor

EVAL_FILE = "evaluation.json"
WORST = 12


class EvaluationError(Exception):
    """Evaluation cannot run; the message says why."""


def evaluate_pairs(predictor: SegPredictor, pairs: list[Pair],
                   on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Metrics of the predictor on image/mask pairs (pairs without a readable mask are listed, not counted)."""
    k = len(predictor.classes)
    cm = torch.zeros(k, k, dtype=torch.long)
    per_image, bad = [], []
    t0 = time.perf_counter()
    for i, pair in enumerate(pairs):
        if on_progress:
            on_progress("evaluating", i, len(pairs))
        if pair.mask is None:
            bad.append({"name": pair.name, "reason": "no mask with the same name"})
            continue
        try:
            truth = load_mask(pair.mask, predictor.table)
        except SegDataError as err:
            bad.append({"name": pair.name, "reason": str(err)})
            continue
        pred = predictor.predict(pair.image, pair.name)
        if not pred.ok:
            bad.append({"name": pair.name, "reason": pred.error})
            continue
        if pred.mask.shape != truth.shape:
            bad.append({"name": pair.name, "reason": f"the mask is {truth.shape[1]}×{truth.shape[0]}, the image "
                                                     f"{pred.mask.shape[1]}×{pred.mask.shape[0]}"})
            continue
        one = metrics.confusion(torch.from_numpy(pred.mask), torch.from_numpy(truth), k)
        cm += one
        per_image.append({"name": pair.name, "image": pair.image, "mask": pair.mask, "miou": metrics.mean_iou(one),
                          "pixel_accuracy": metrics.pixel_accuracy(one),
                          "void_share": float((truth == IGNORE).mean())})
    if on_progress:
        on_progress("evaluating", len(pairs), len(pairs))
    if not per_image:
        raise EvaluationError("No image could be evaluated: " + "; ".join(f"{b['name']}: {b['reason']}"
                                                                          for b in bad[:3]))
    s = metrics.summary(cm, predictor.classes)
    scored = [p for p in per_image if not math.isnan(p["miou"])]
    worst = sorted(scored, key=lambda p: p["miou"])[:WORST]
    seconds = time.perf_counter() - t0
    return {"task": "segmentation", **s, "classes": predictor.classes, "n_images": len(per_image),
            "n_skipped": len(bad), "bad_images": bad, "worst": worst, "per_image": per_image,
            "colours": [list(c) for c in predictor.table.colours], "images_per_second": len(per_image) / seconds,
            "notes": ["mIoU is the mean IoU over the known classes present in the truth or the prediction; void "
                      "pixels are ignored."]}


def evaluate_folder(run: str | Path, data: str | Path, on_progress=None) -> dict:
    """Evaluate a run or an export on a folder with images/ + masks/ (or train/ and val/ holding them)."""
    predictor = SegPredictor.load(run)
    try:
        scan = scan_folder(data)
    except SegDataError as err:
        raise EvaluationError(str(err)) from None
    out = evaluate_pairs(predictor, scan.pairs, on_progress)
    out["source"] = str(Path(data).resolve())
    out["extra_masks"] = scan.extra_masks
    return out


def evaluate_run(run_dir: str | Path, on_progress=None, save: bool = True) -> dict:
    """Evaluate a run on its own validation pairs and store evaluation.json (with the weights' stamp)."""
    run_dir = Path(run_dir)
    manifest = runs.load_dataset(run_dir)
    pairs = [Pair(it["image"], it["mask"], it["split"], it["name"]) for it in manifest["items"]
             if it["split"] == "val"]
    predictor = SegPredictor.from_run(run_dir)
    out = evaluate_pairs(predictor, pairs, on_progress)
    out["source"] = "validation split of the run"
    out["split"] = "val"
    out["weights_stamp"] = _stamp(run_dir)
    if save:
        write_json_atomic(run_dir / EVAL_FILE, out)
    return out


def _stamp(run_dir: Path) -> float:
    path = Path(run_dir) / "checkpoints" / "best.safetensors"
    return path.stat().st_mtime if path.exists() else 0.0


def load_evaluation(run_dir: str | Path) -> dict | None:
    """The stored evaluation, marked stale when the weights changed since."""
    ev = read_json(Path(run_dir) / EVAL_FILE)
    if not isinstance(ev, dict) or ev.get("task") != "segmentation":
        return None
    ev["stale"] = ev.get("weights_stamp") != _stamp(Path(run_dir))
    return ev


def overlay_pair(ev_row: dict, predictor: SegPredictor, opacity: float = 0.5, side: int = 320
                 ) -> tuple[object, object, object]:
    """(photo, truth overlay, prediction overlay) thumbnails of one evaluated image."""
    from core.data.images import load_rgb
    from core.tasks.segmentation.predict import colour_overlay

    img = load_rgb(ev_row["image"])
    truth = load_mask(ev_row["mask"], predictor.table)
    pred = predictor.predict(ev_row["image"]).mask
    colours = [tuple(c) for c in predictor.table.colours]
    t = colour_overlay(img, truth, colours, opacity, ignore=truth == IGNORE)
    p = colour_overlay(img, pred if pred is not None else np.zeros_like(truth), colours, opacity)
    for im in (img, t, p):
        im.thumbnail((side, side))
    return img, t, p
