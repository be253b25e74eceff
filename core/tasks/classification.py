"""Image classification: a backbone from the zoo with a fresh linear head, one label per image."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from core import zoo
from core.config import FreezeConfig, TrainConfig
from core.tasks import TITLES

# The defaults that won on clothing10 and hymenoptera (BENCHMARKS.md, "Choosing the defaults", issue 9).
DEFAULT_PRESET = "gradual"
DEFAULT_EPOCHS = 5
# No label smoothing: +0.5 points on clothing10 over five seeds; 0.96 on hymenoptera in 3 of 4 seeds, against
# 2 of 4 with smoothing 0.1 (BENCHMARKS.md, session 31).
DEFAULT_LABEL_SMOOTHING = 0.0
# When `gradual` unfreezes the backbone, its first 3 layer groups (MobileNetV2: stem, blocks 0-1, 0.7 % of the
# weights, learning at 1-3 % of the head's rate) stay frozen: 1.5x the images/s at the same accuracy
# (BENCHMARKS.md, session 32). Runs from scratch unfreeze them (core.engine).
DEFAULT_KEEP_FROZEN = 3


@dataclass(frozen=True)
class ClassificationTask:
    name: str = "classification"
    title: str = TITLES["classification"]
    description: str = "Sort photos into classes you define (a folder per class)."
    metric: str = "val_accuracy"
    metric_label: str = "validation accuracy"
    has_quick: bool = True

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module:
        """Backbone with its pretrained weights and a new, zero-initialised classifier for `num_classes`.

        A zero head starts every class at the same score (loss = log(classes)), so the first steps refine the
        pretrained features instead of undoing random large logits."""
        model = zoo.create_model(backbone, num_classes=num_classes, pretrained=pretrained)
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if pretrained and isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return model

    def default_train(self) -> TrainConfig:
        """What a user who just presses Start gets (the crop size depends on the model: `default_train_size`)."""
        return TrainConfig(epochs=DEFAULT_EPOCHS, label_smoothing=DEFAULT_LABEL_SMOOTHING)

    def start_train(self, input_size: int, **choices) -> TrainConfig:
        """The settings a user who presses Start gets for a model of `input_size` (the defaults with their training
        crop size), with `choices` (None = not chosen, the default stays)."""
        size = self.default_train_size(input_size)
        return self.default_train().with_choices(train_size=size).with_choices(**choices)

    def default_freeze(self) -> FreezeConfig:
        """Head first (one epoch), then all but the first groups, with lower learning rates for the early ones."""
        return FreezeConfig(DEFAULT_PRESET, keep_frozen=DEFAULT_KEEP_FROZEN)

    def start_freeze(self, preset: str | None = None, keep_frozen: int | None = None) -> FreezeConfig:
        """What trains when a user names (or leaves out) a preset: `gradual` keeps the default number of first
        groups frozen unless `keep_frozen` says otherwise (None = not chosen)."""
        freeze = self.default_freeze() if preset is None else FreezeConfig(preset)
        if keep_frozen is not None and freeze.preset != "gradual":
            raise ValueError(f"keeping the first groups frozen applies to the gradual preset, not '{freeze.preset}'")
        if freeze.preset == "gradual":
            return replace(freeze, keep_frozen=DEFAULT_KEEP_FROZEN if keep_frozen is None else keep_frozen)
        return freeze

    def default_train_size(self, input_size: int) -> int:
        """Training crops of about 0.72 × the model's input (224 → 160): ~1.85× the images/s at equal or better
        accuracy at the full size, which validation and predictions keep."""
        from core.pipeline import reduced_train_size

        return reduced_train_size(input_size)

    def resolve_data(self, dataset: str, seed: int = 0) -> dict:
        """A class-folder manifest (stored dataset, folder with class sub-folders, or sample:NAME)."""
        from core import trainset

        return trainset.resolve(dataset, seed=seed)

    def fit(self, run_dir: Path, subscribers: Sequence[Callable[[Any], None]] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Any:
        """The shared engine (`core.engine.fit`)."""
        from core.engine import fit

        return fit(run_dir, subscribers, should_stop)

    def cli(self, command: str, args: argparse.Namespace) -> int:  # noqa: ARG002 - classification has its own
        raise NotImplementedError("classification commands live in core.cli and core.cli_eval")


CLASSIFICATION = ClassificationTask()
TASK = CLASSIFICATION
