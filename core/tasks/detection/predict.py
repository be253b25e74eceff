"""Predict boxes with a trained run or an export (safetensors + manifest): label, score and box in pixels of the
original image (EXIF orientation applied), with the time per image."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import runs
from core.data.images import ImageError, load_rgb
from core.device import plan_device
from core.tasks.detection.model import DetectorConfig, predicting

DEFAULT_THRESHOLD = 0.5


@dataclass
class Detection:
    label: str
    score: float
    box: list[float]  # x1, y1, x2, y2 in pixels of the original image

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 4), "box": [round(v, 1) for v in self.box]}


@dataclass
class ImageResult:
    name: str
    detections: list[Detection] = field(default_factory=list)
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    error: str = ""
    best: Detection | None = None  # the highest-scoring box, even below the threshold


    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict:
        out = {"name": self.name, "detections": [d.to_dict() for d in self.detections],
               "best": self.best.to_dict() if self.best else None, "width": self.width, "height": self.height,
               "seconds": round(self.seconds, 4)}
        if self.error:
            out["error"] = self.error
        return out


def image_tensor(source: str | os.PathLike | bytes) -> torch.Tensor:
    """Decode safely (EXIF orientation, RGB) to a float CHW tensor in [0, 1]: the model's input."""
    img = load_rgb(source)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)


class Detector:
    """A detector ready to predict: from a run folder (best weights) or a validated export folder/zip."""

    def __init__(self, model: torch.nn.Module, classes: list[str], source: str, eval_size: int | None = None,
                 backbone: str = "") -> None:
        self.model = model.eval()
        self.classes = classes
        self.source = source
        self.backbone = backbone
        self.eval_size = eval_size or getattr(model, "detector_config", DetectorConfig()).eval_size
        self.plan = plan_device("cpu", "fp32")

    def describe(self) -> dict:
        return {"source": self.source, "backbone": self.backbone, "classes": self.classes,
                "eval_size": self.eval_size}

    @torch.inference_mode()
    def raw(self, image: torch.Tensor) -> dict:
        """{boxes, scores, labels} for one float CHW image (all detections the model keeps)."""
        with predicting(self.model, self.eval_size):
            out = self.model([image])[0]
        return {k: v.detach().cpu() for k, v in out.items()}

    def detect(self, source: str | os.PathLike | bytes, name: str = "", threshold: float = DEFAULT_THRESHOLD
               ) -> ImageResult:
        """Boxes scoring at least `threshold` for one image file or upload (bytes)."""
        shown = name or (Path(source).name if not isinstance(source, bytes) else "upload")
        try:
            image = image_tensor(source)
        except (ImageError, OSError) as err:
            return ImageResult(shown, error=str(getattr(err, "reason", err)))
        t0 = time.perf_counter()
        out = self.raw(image)
        seconds = time.perf_counter() - t0
        every = [Detection(self.label_name(int(lbl)), float(s), [float(v) for v in b])
                 for b, s, lbl in zip(out["boxes"], out["scores"], out["labels"], strict=True)]
        best = max(every, key=lambda d: d.score, default=None)
        return ImageResult(shown, [d for d in every if d.score >= threshold], int(image.shape[-1]),
                           int(image.shape[-2]), seconds, best=best)

    def label_name(self, label: int) -> str:
        return self.classes[label - 1] if 1 <= label <= len(self.classes) else f"class {label}"

    def predict(self, sources: list[str], threshold: float = DEFAULT_THRESHOLD) -> list[ImageResult]:
        """Each photo named as given (a folder's photos may share a file name), as classification names them."""
        return [self.detect(s, name=str(s), threshold=threshold) for s in sources]


def from_run(run_dir: str | os.PathLike) -> Detector:
    """The run's best weights in a float32 CPU detector."""
    from core.tasks.detection.train import build_for_run

    run_dir = Path(run_dir)
    model, manifest, classes = build_for_run(run_dir, pretrained=False)
    model.load_state_dict(runs.load_weights(run_dir), strict=True)
    return Detector(model.float(), classes, f"run {run_dir.name}", backbone=runs.load_config(run_dir).backbone)


def load_detector(path: str | os.PathLike) -> Detector:
    """A run folder, or an export folder / zip (model.safetensors + manifest.json only, checked first)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return from_run(path)
    from core.tasks.detection.export import load_export

    return load_export(path)
