"""Detection metrics from torchmetrics' MeanAveragePrecision (COCO protocol, pycocotools backend): mAP@0.5,
mAP@0.5:0.95, per class, and the precision-recall curve at IoU 0.5. Per-image matching for the gallery (which
boxes are hits, misses, false positives at a score threshold) is a plain greedy IoU match."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou


def _target(t: dict) -> dict:
    return {"boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(t["labels"], dtype=torch.int64).reshape(-1)}


def _pred(p: dict) -> dict:
    return {**_target(p), "scores": torch.as_tensor(p["scores"], dtype=torch.float32).reshape(-1)}


def _num(v: torch.Tensor | float) -> float | None:
    x = float(v)
    return None if not math.isfinite(x) or x < 0 else x


def mean_average_precision(preds: Sequence[dict], targets: Sequence[dict], classes: Sequence[str],
                           curve: bool = False) -> dict:
    """mAP of predictions (`boxes` x1,y1,x2,y2, `scores`, `labels` 1-based) against targets (`boxes`, `labels`).

    Returns {map50, map, map75, mar100, per_class: [{class, ap50, ap, n_boxes}], pr_curve (with `curve`)}. A class
    without ground-truth boxes has ap None."""
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, extended_summary=True, backend="pycocotools")
    metric.update([_pred(p) for p in preds], [_target(t) for t in targets])
    res = metric.compute()
    n_boxes = [0] * len(classes)
    for t in targets:
        for lbl in _target(t)["labels"].tolist():
            if 1 <= lbl <= len(classes):
                n_boxes[lbl - 1] += 1
    present = [int(c) for c in torch.as_tensor(res["classes"]).reshape(-1).tolist()]
    ap_all = torch.as_tensor(res["map_per_class"]).reshape(-1).tolist()
    per_class = []
    ap50 = _per_class_ap50(res, present) if present else {}
    for k, name in enumerate(classes, start=1):
        ap = ap_all[present.index(k)] if k in present else -1
        per_class.append({"class": name, "ap50": ap50.get(k), "ap": _num(ap) if n_boxes[k - 1] else None,
                          "n_boxes": n_boxes[k - 1]})
    out = {"map50": _num(res["map_50"]) or 0.0, "map": _num(res["map"]) or 0.0, "map75": _num(res["map_75"]),
           "mar100": _num(res["mar_100"]), "per_class": per_class}
    if curve:
        out["pr_curve"] = _pr_curve(res, present, classes)
    return out


def _per_class_ap50(res: dict, present: list[int]) -> dict[int, float | None]:
    """AP at IoU 0.5 per class: the mean of the interpolated precision over the 101 recall points (COCO), read from
    the extended summary's precision table (IoU thresholds × recall points × classes × areas × max detections)."""
    precision = res["precision"]
    out = {}
    for i, c in enumerate(present):
        p = precision[0, :, i, 0, -1]
        out[c] = float(p.clamp(min=0).mean()) if bool((p > -1).any()) else None
    return out


def _pr_curve(res: dict, present: list[int], classes: Sequence[str]) -> list[dict]:
    precision = res.get("precision")
    if precision is None:
        return []
    recall = torch.linspace(0, 1, precision.shape[1]).tolist()
    rows = []
    for i, c in enumerate(present):
        p = precision[0, :, i, 0, -1].tolist()
        rows.append({"class": classes[c - 1] if 1 <= c <= len(classes) else str(c),
                     "recall": recall, "precision": [max(v, 0.0) if v > -1 else None for v in p]})
    return rows


def match_image(pred: dict, target: dict, threshold: float, iou: float = 0.5) -> dict:
    """Greedy matching of one image's predictions scoring ≥ `threshold` to its boxes (same class, IoU ≥ `iou`):
    indices of hits (true positives), false positives and misses (ground truth not found)."""
    p, t = _pred(pred), _target(target)
    order = [i for i in torch.argsort(p["scores"], descending=True).tolist() if p["scores"][i] >= threshold]
    used: set[int] = set()
    hits, false_pos = [], []
    ious = box_iou(p["boxes"], t["boxes"]) if len(p["boxes"]) and len(t["boxes"]) else None
    for i in order:
        best, best_j = iou, -1
        if ious is not None:
            for j in range(len(t["boxes"])):
                if j in used or int(t["labels"][j]) != int(p["labels"][i]):
                    continue
                if float(ious[i, j]) >= best:
                    best, best_j = float(ious[i, j]), j
        if best_j >= 0:
            used.add(best_j)
            hits.append(i)
        else:
            false_pos.append(i)
    misses = [j for j in range(len(t["boxes"])) if j not in used]
    return {"hits": hits, "false_positives": false_pos, "misses": misses}
