"""Frozen, JSON-serialisable configs. Defaults live here."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

DEFAULT_BACKBONE = "mobilenetv2_100"  # the model of the app and the command line when none is chosen
PRESETS = ("head", "last-N", "all", "gradual", "custom")
PRESET_HELP = {
    "head": "Train only the new head; the pretrained backbone stays as it is. Fastest, needs the fewest photos.",
    "last-N": "Train the head and the last N layer groups of the backbone (e.g. last-2).",
    "all": "Train every layer. Best with many photos; slower and uses more memory.",
    "gradual": "Train the head first, then unfreeze the rest with lower learning rates for earlier groups.",
    "custom": "Choose per layer group what trains.",
}
_LAST_N = re.compile(r"^last-(\d{1,3})$")


@dataclass(frozen=True)
class FreezeConfig:
    """What trains. preset: head | last-N (e.g. last-2) | all | gradual | custom (with `groups`)."""

    preset: str = "head"
    groups: tuple[str, ...] = ()
    train_bn: bool = False
    head_epochs: int = 1
    lr_floor: float = 0.01
    keep_frozen: int = 0  # gradual: the first N layer groups (stem first) stay frozen when the rest unfreezes

    def __post_init__(self) -> None:
        if self.preset not in ("head", "all", "gradual", "custom") and not _LAST_N.match(self.preset):
            raise ValueError(f"Unknown freeze preset '{self.preset}'. Use head, last-N (e.g. last-2), all, gradual "
                             "or custom.")
        if not 0 < self.lr_floor <= 1:
            raise ValueError("lr_floor must be in (0, 1].")
        if self.keep_frozen < 0:
            raise ValueError("keep_frozen (the number of first groups that stay frozen) must be 0 or more.")

    def for_weights(self, pretrained: bool) -> FreezeConfig:
        """What trains for these starting weights: random first layers must learn, so nothing is kept frozen."""
        return self if pretrained or not self.keep_frozen else replace(self, keep_frozen=0)

    @property
    def last_n(self) -> int | None:
        match = _LAST_N.match(self.preset)
        return int(match.group(1)) if match else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FreezeConfig:
        data = dict(data)
        data["groups"] = tuple(data.get("groups", ()))
        return cls(**data)


IMAGE_FITS = ("crop", "squash", "pad")  # the keys of core.pipeline.FITS (config stays free of image code)
AUTO_FIT = "auto"  # a run's fit chosen from its training photos when it starts (core.quick.choose_fit)
FIT_CHOICES = (*IMAGE_FITS, AUTO_FIT)  # what a user may ask for

AUGMENTATIONS = {
    "crop": "Random crop and zoom (the model sees different parts of each photo).",
    "flip": "Mirror left-right (off when left/right matters, e.g. arrows or text).",
    "color": "Small changes of brightness, contrast and saturation.",
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. lr None = the recommended default for the freeze choice."""

    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    augment: tuple[str, ...] = ("crop", "flip", "color")
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    class_weights: bool = False
    max_bad_steps: int = 3
    nproc: int = 1  # processes on this machine (one per GPU; DDP). batch_size is per process.
    train_size: int = 0  # side of the training crops in pixels; 0 = the model's input size (validation always is)
    image_fit: str = "crop"  # how a photo becomes the model's square: core.pipeline.FITS (runs saved before: crop)
    crop_min_area: float = 0.25  # "crop" augmentation: the smallest share of the square a random crop keeps

    def __post_init__(self) -> None:
        for what, value in (("epochs", self.epochs), ("the batch size", self.batch_size),
                            ("the number of processes", self.nproc)):
            if value < 1:
                raise ValueError(f"{what} must be at least 1, not {value}")
        if self.lr is not None and not 0 < self.lr < 10:
            raise ValueError(f"the learning rate must be between 0 and 10, not {self.lr:g}")
        if self.train_size and not 32 <= self.train_size <= 1024:
            raise ValueError(f"the training image size must be between 32 and 1024 pixels (0 = the model's own), "
                             f"not {self.train_size}")
        if self.image_fit not in FIT_CHOICES:
            raise ValueError(f"image fit must be one of {', '.join(FIT_CHOICES)}")
        if not 0.05 <= self.crop_min_area <= 1.0:
            raise ValueError("the smallest crop area must be between 0.05 and 1.0 of the photo")
        if not 0.0 <= self.label_smoothing <= 0.5:
            raise ValueError("label smoothing must be between 0 and 0.5")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError("optimizer must be 'adamw' or 'sgd'")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"Unknown augmentations: {sorted(unknown)}; use {sorted(AUGMENTATIONS)}")

    def effective_lr(self, freeze: FreezeConfig) -> float:
        """The learning rate used: the user's, or the default for the optimizer and freeze choice.

        AdamW (default): 2e-3 for the head alone, 5e-4 when backbone layers train. Adam's steps do not grow with
        the size of the features, so a fresh head cannot blow up as it can with SGD on 1,280 raw features.
        SGD: 0.01, scaled linearly with the batch size from 32."""
        if self.lr is not None:
            return self.lr
        if self.optimizer == "adamw":
            return 2e-3 if freeze.preset == "head" else 5e-4
        return 0.01 * self.batch_size / 32

    def with_choices(self, **choices) -> TrainConfig:
        """These settings (a task's defaults) with what the user chose; None = not chosen, the default stays."""
        return replace(self, **{k: v for k, v in choices.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["augment"] = tuple(data.get("augment", ()))
        data.setdefault("crop_min_area", 0.25)  # runs saved before the field cropped down to a quarter
        return cls(**data)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs to be reproduced: task, backbone, dataset, freeze and training settings."""

    backbone: str
    dataset: str  # a dataset id of the app's store, or a folder path
    freeze: FreezeConfig = FreezeConfig()
    train: TrainConfig = TrainConfig()
    task: str = "classification"
    name: str = ""
    pretrained: bool = True
    quick: bool = False

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "dataset": self.dataset, "freeze": self.freeze.to_dict(),
                "train": self.train.to_dict(), "task": self.task, "name": self.name, "pretrained": self.pretrained,
                "quick": self.quick}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return cls(backbone=data["backbone"], dataset=data["dataset"],
                   freeze=FreezeConfig.from_dict(data.get("freeze", {})),
                   train=TrainConfig.from_dict(data.get("train", {})), task=data.get("task", "classification"),
                   name=data.get("name", ""), pretrained=bool(data.get("pretrained", True)),
                   quick=bool(data.get("quick", False)))
