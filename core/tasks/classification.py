"""Image classification: a backbone from the zoo with a fresh linear head, one label per image."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core import zoo


@dataclass(frozen=True)
class ClassificationTask:
    name: str = "classification"
    title: str = "Image classification"
    description: str = "Sort photos into classes you define (a folder per class)."

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module:
        """Backbone with its pretrained weights and a new classifier for `num_classes`."""
        return zoo.create_model(backbone, num_classes=num_classes, pretrained=pretrained)


CLASSIFICATION = ClassificationTask()
