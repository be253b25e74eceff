"""The training loss: cross-entropy + Dice, both ignoring IGNORE pixels. Dice weighs every class present in the
batch equally, so small classes (poles, signs, people) pull on the model as much as road and sky."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.tasks.segmentation.data import IGNORE


class DiceCE(nn.Module):
    """`ce_weight` × cross-entropy (optionally class-weighted) + `dice_weight` × multiclass soft Dice (smp)."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, class_weights: torch.Tensor | None = None,
                 ignore_index: int = IGNORE) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.ce_weight, self.dice_weight, self.ignore_index = ce_weight, dice_weight, ignore_index
        self.dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.empty(0),
                             persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0  # an all-ignore batch: no signal, but a finite loss with a graph
        weight = self.class_weights if self.class_weights.numel() else None
        loss = self.ce_weight * F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss
