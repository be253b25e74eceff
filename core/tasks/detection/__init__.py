"""Object detection: boxes and class names on photos; a torchvision detector on the zoo's offline backbones.

Plugged into the task seam (`core.tasks`): data from COCO JSON / Pascal VOC XML / YOLO txt or boxes drawn in the
app, Faster R-CNN + FPN heads learning on an ImageNet backbone, mAP@0.5 as the primary metric.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from core.config import FreezeConfig, TrainConfig
from core.tasks import TITLES

MODEL_NOTE = ("No detector pretrained on COCO is available offline: the backbone's ImageNet knowledge is "
              "transferred, and the detection heads (feature pyramid, region proposals, box classifier) learn from "
              "your boxes. A few dozen boxes per class are enough for a demo; more make it reliable.")


@dataclass(frozen=True)
class DetectionTask:
    name: str = "detection"
    title: str = TITLES["detection"]
    description: str = "Find and box objects in photos (draw boxes or bring COCO / VOC / YOLO annotations)."
    metric: str = "val_map50"
    metric_label: str = "mAP@0.5"
    has_quick: bool = False
    export_formats: tuple[str, ...] = ("safetensors", "onnx")  # = export.FORMATS (a test keeps them equal)
    train_options: tuple[str, ...] = ()  # Train page extras that apply (the LR finder is classification's)
    model_note: str = MODEL_NOTE
    head_label: str = "feature pyramid + detection heads (new, always train)"

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module:
        """Faster R-CNN + FPN on the zoo backbone (BatchNorm folded); `num_classes` object classes."""
        from core.tasks.detection.model import build_detector

        return build_detector(backbone, num_classes, pretrained)

    def resolve_data(self, dataset: str, seed: int = 0) -> dict:
        """The run manifest from a stored detection dataset id or a folder (annotations found automatically)."""
        from core.tasks.detection.dataset import resolve

        return resolve(dataset, seed)

    def reproduce_args(self, manifest: dict) -> list[str]:
        """`--annotations FILE` when the run read a folder whose annotation file could be ambiguous."""
        source = manifest.get("source") or {}
        ann = source.get("annotations")
        if source.get("kind") == "folder" and ann and Path(str(ann)).is_file():
            return ["--annotations", str(ann)]
        return []

    def fit(self, run_dir: Path, subscribers: Sequence[Callable[[Any], None]] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Any:
        from core.tasks.detection.train import fit

        return fit(run_dir, subscribers, should_stop)

    def default_train(self) -> TrainConfig:
        """The measured defaults (see BENCHMARKS.md, Object detection): SGD 0.01 with warm-up and cosine decay,
        batches of 4, box-aware crop/flip/colour."""
        return TrainConfig(epochs=24, batch_size=4, lr=0.01, optimizer="sgd", weight_decay=1e-4, momentum=0.9,
                           warmup_fraction=0.1, label_smoothing=0.0, augment=("crop", "flip", "color"))

    def default_freeze(self) -> FreezeConfig:
        """The stem and the first three block groups stay frozen (edges, textures); the rest and the heads train."""
        return FreezeConfig("last-4")

    def ensure_sample(self) -> str:
        from core.tasks.detection.sample import ensure_sample

        return ensure_sample()

    def cli(self, command: str, args: argparse.Namespace) -> int:
        from core.tasks.detection.cli import run

        return run(command, args)


DETECTION = DetectionTask()
TASK = DETECTION
