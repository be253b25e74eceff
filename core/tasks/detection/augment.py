"""Box-aware augmentation: random scale-crop, horizontal flip and colour changes that move the boxes with the pixels.

Every random draw comes from the `torch.Generator` passed in, so a batch is a pure function of its place in the run
(seed, epoch, position) and a resumed run sees exactly the same images. Multi-scale resizing is left to the
detector's own transform (a random short side per image from the configured sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF

AUGMENTATIONS = ("crop", "flip", "color")


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=gen))


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: x1' = W - x2, x2' = W - x1."""
    width = image.shape[-1]
    out = boxes.clone()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return TF.horizontal_flip(image), out


def crop(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, top: int, left: int, height: int,
         width: int, min_kept: float = 0.4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut the window (top, left, height, width); boxes are shifted and clipped to it, and a box keeping less than
    `min_kept` of its area is dropped (it would teach the model to find a sliver)."""
    shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    clipped = torch.stack([shifted[:, 0].clamp(0, width), shifted[:, 1].clamp(0, height),
                           shifted[:, 2].clamp(0, width), shifted[:, 3].clamp(0, height)], dim=1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept >= min_kept * area) & (clipped[:, 2] - clipped[:, 0] >= 2) & (clipped[:, 3] - clipped[:, 1] >= 2)
    return image[..., top:top + height, left:left + width], clipped[keep], labels[keep]


def random_crop(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
                min_scale: float = 0.5, tries: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window of 50–100 % of each side. An image with boxes keeps at least one whole-enough box (else it
    is left uncropped after `tries`)."""
    h, w = image.shape[-2:]
    for _ in range(tries):
        ch, cw = max(8, round(h * _u(gen, min_scale, 1.0))), max(8, round(w * _u(gen, min_scale, 1.0)))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        out = crop(image, boxes, labels, top, left, ch, cw)
        if len(boxes) == 0 or len(out[1]) > 0:
            return out
    return image, boxes, labels


def color(image: torch.Tensor, gen: torch.Generator, strength: float = 0.25) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength]."""
    b, c, s = (_u(gen, 1 - strength, 1 + strength) for _ in range(3))
    return TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, b), c), s)


def augment(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, ops: Sequence[str],
            gen: torch.Generator, crop_probability: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the chosen augmentations (a subset of crop, flip, color) to a uint8 CHW image and its boxes."""
    if "crop" in ops and _u(gen, 0, 1) < crop_probability:
        image, boxes, labels = random_crop(image, boxes, labels, gen)
    if "flip" in ops and _u(gen, 0, 1) < 0.5:
        image, boxes = hflip(image, boxes)
    if "color" in ops:
        image = color(image, gen)
    return image, boxes, labels
