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
        """Backbone with its pretrained weights and a new, zero-initialised classifier for `num_classes`.

        A zero head starts every class at the same score (loss = log(classes)), so the first steps refine the
        pretrained features instead of undoing random large logits."""
        model = zoo.create_model(backbone, num_classes=num_classes, pretrained=pretrained)
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if pretrained and isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return model


CLASSIFICATION = ClassificationTask()
