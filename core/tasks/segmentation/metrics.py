"""Segmentation metrics from a class confusion matrix (torchmetrics), IGNORE pixels left out.

IoU of a class = TP / (TP + FP + FN); a class with no pixels in either truth or prediction has no IoU (NaN) and is
left out of the mean, so mIoU is over the known classes that occur. Pixel accuracy = trace / total."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from core.tasks.segmentation.data import IGNORE


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE
              ) -> torch.Tensor:
    """(K, K) int64 counts, rows = truth, columns = prediction; pixels whose truth is `ignore_index` are skipped."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    if pred.numel() == 0:
        return torch.zeros(num_classes, num_classes, dtype=torch.long)
    return multiclass_confusion_matrix(pred, target, num_classes, ignore_index=ignore_index,
                                       validate_args=False).long()


def iou_per_class(cm: torch.Tensor) -> list[float]:
    """IoU of every class (NaN where the class is absent from truth and prediction)."""
    cm = cm.double()
    tp = cm.diag()
    denom = cm.sum(0) + cm.sum(1) - tp
    return [float(t / d) if d > 0 else math.nan for t, d in zip(tp, denom, strict=True)]


def mean_iou(cm: torch.Tensor) -> float:
    vals = [v for v in iou_per_class(cm) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def pixel_accuracy(cm: torch.Tensor) -> float:
    total = int(cm.sum())
    return float(cm.diag().sum()) / total if total else math.nan


def summary(cm: torch.Tensor, classes: list[str]) -> dict:
    """miou, pixel_accuracy, per_class_iou {name: iou or None}, per_class rows and the matrix."""
    ious = iou_per_class(cm)
    support = cm.sum(1).tolist()
    predicted = cm.sum(0).tolist()
    return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "per_class_iou": {c: (None if math.isnan(v) else v) for c, v in zip(classes, ious, strict=True)},
            "per_class": [{"class": c, "iou": None if math.isnan(v) else v, "pixels": int(s), "predicted": int(p)}
                          for c, v, s, p in zip(classes, ious, support, predicted, strict=True)],
            "confusion_matrix": cm.tolist()}
