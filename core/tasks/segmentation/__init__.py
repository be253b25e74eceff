"""Semantic segmentation: images + masks (class-id or colour PNGs), smp U-Net / FPN / DeepLabV3+ on the offline
encoders, Dice + cross-entropy with void ignored, mIoU as the primary metric."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from core.config import FreezeConfig, TrainConfig
from core.tasks import TITLES
from core.tasks.segmentation.model import ARCH_NOTES, ARCHITECTURES, DEFAULT_ARCH, check_arch

_STORE_ID = re.compile(r"^[0-9a-f]{32}$")
SAMPLE_NAME = "segmentation"
SAMPLE_TITLE = "Sample: shapes (segmentation)"


@dataclass(frozen=True)
class SegmentationTask:
    name: str = "segmentation"
    title: str = TITLES["segmentation"]
    description: str = "Colour every pixel by what it shows (photos + masks)."
    metric: str = "val_miou"
    metric_label: str = "mIoU"
    has_quick: bool = False
    export_formats: tuple[str, ...] = ("safetensors", "onnx")  # = export.FORMATS (a test keeps them equal)
    train_options: tuple[str, ...] = ("class_weights", "crop_size")  # pixel weights, crop side (no LR finder)
    full_crop: int = 352  # the training crop side that train_size = 0 means
    model_note: str = ("For segmentation the backbone becomes the encoder of a U-Net (default), FPN or DeepLabV3+ "
                       "from segmentation-models-pytorch; its ImageNet weights load into the encoder and the decoder "
                       "is new and always trains. MobileNetV2 is the fastest on a CPU; EfficientNet-Lite0 is a bit "
                       "more accurate.")
    architectures: dict = field(default_factory=lambda: dict(ARCHITECTURES))
    architecture_notes: dict = field(default_factory=lambda: dict(ARCH_NOTES))
    default_arch: str = DEFAULT_ARCH

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True, arch: str = DEFAULT_ARCH
                    ) -> nn.Module:
        """smp `arch` with the backbone as its encoder (offline ImageNet weights) and `num_classes` outputs."""
        from core.tasks.segmentation.model import build

        return build(backbone, num_classes, pretrained, arch)

    def resolve_data(self, dataset: str, seed: int = 0, arch: str | None = None, ignore: int | None = None,
                     val_fraction: float = 0.2) -> dict:
        """The manifest frozen into a run: a stored dataset id, "sample:segmentation" or a folder path (images/ +
        masks/, optionally inside train/ and val/). `arch` (unet | fpn | deeplabv3plus) is recorded in it as
        manifest["model"]["arch"] (the run's config has no task-specific model field)."""
        from core.tasks.segmentation import data
        from core.trainset import DatasetProblem

        try:
            arch = check_arch(arch or DEFAULT_ARCH)
        except ValueError as err:
            raise DatasetProblem(str(err)) from None
        except Exception as err:  # ModelError
            raise DatasetProblem(str(err)) from None
        if dataset.startswith("sample:"):
            dataset = self.ensure_sample()
        try:
            if _STORE_ID.match(dataset) and not Path(dataset).exists():
                manifest = data.resolve_stored(dataset, seed)
            else:
                if not Path(dataset).expanduser().is_dir():
                    raise DatasetProblem(f"{dataset} is neither a folder nor a stored dataset.")
                manifest = data.resolve_folder(dataset, seed, ignore=ignore, val_fraction=val_fraction)
        except data.SegDataError as err:
            raise DatasetProblem(str(err)) from None
        except DatasetProblem:
            raise
        except Exception as err:  # DatasetError from the store: a message for people
            raise DatasetProblem(getattr(err, "reason", None) or str(err)) from None
        manifest["model"] = {"arch": arch}
        return manifest

    def reproduce_args(self, manifest: dict) -> list[str]:
        """The command-line options that recreate this run's model choice and void value."""
        args = []
        arch = (manifest.get("model") or {}).get("arch")
        if arch:
            args += ["--arch", str(arch)]
        if manifest.get("ignore_value") is not None:
            args += ["--ignore-index", str(manifest["ignore_value"])]
        return args

    def fit(self, run_dir: Path, subscribers: Sequence[Callable[[Any], None]] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Any:
        from core.tasks.segmentation.train import fit

        return fit(run_dir, subscribers, should_stop)

    def default_train(self) -> TrainConfig:
        """18 epochs of batch 8 on 256² crops with scale jitter, AdamW + warm-up + cosine, no label smoothing, the
        cross-entropy weighted by class rarity: ~17 minutes on CamVid with 2 CPU cores, val mIoU 0.65 after 10
        (BENCHMARKS.md; unweighted: 0.48 after 10, 0.63 at the end). 256² runs 2.3× the images/s of 352² here, so
        the whole cosine schedule fits the time budget; validation uses whole images."""
        return TrainConfig(epochs=18, batch_size=8, label_smoothing=0.0, augment=("crop", "flip", "color"),
                           train_size=256, class_weights=True)

    def default_freeze(self) -> FreezeConfig:
        """Everything trains: the decoder is new, and the encoder adapts to the new scale of the task."""
        return FreezeConfig("all")

    def ensure_sample(self) -> str:
        """The stored copy of the sample shapes set (imported once, made on the fly when setup has not made it)."""
        from core.tasks.segmentation import data, sample

        found = find_sample()
        if found:
            return found
        from core.settings import sample_data_root, subdir

        folder = sample_data_root() / sample.FOLDER
        if not (folder / "train").is_dir():
            folder = subdir("cache") / "samples" / sample.FOLDER
            if not (folder / "train").is_dir():
                folder = sample.make(folder.parent)
        dataset_id, _ = data.import_folder(folder, SAMPLE_TITLE, source={"kind": "sample", "name": SAMPLE_NAME,
                                                                          "version": sample.VERSION})
        return dataset_id

    def cli(self, command: str, args: argparse.Namespace) -> int:
        from core.tasks.segmentation.cli import run

        return run(command, args)


def find_sample() -> str | None:
    from core.data.store import list_datasets
    from core.tasks.segmentation import data, sample

    for summary in list_datasets(task="segmentation"):
        try:
            src = data.read_side(summary.id).get("source") or {}
        except Exception:  # noqa: BLE001 - a damaged side file: not the sample
            continue
        if src.get("kind") == "sample" and src.get("name") == SAMPLE_NAME and src.get("version") == sample.VERSION:
            return summary.id
    return None


SEGMENTATION = SegmentationTask()
TASK = SEGMENTATION
