"""Mask-aware augmentations: the image and its mask get the same geometry; masks only ever use nearest-neighbour
resampling (class ids are never blended) and padding with IGNORE; colour changes touch the image alone.

Every random draw comes from a `torch.Generator`, so a batch's augmentation is a pure function of its place in the
run (resume is exact)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from core.tasks.segmentation.data import IGNORE


@dataclass(frozen=True)
class SegAugment:
    """crop: output side; scale: zoom range (1 = the cached resolution); flip/color: on or off."""

    crop: int = 352
    scale: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    color: bool = True
    random_crop: bool = True

    @classmethod
    def from_names(cls, names: tuple[str, ...] | list[str], crop: int) -> SegAugment:
        """From TrainConfig.augment ('crop' = scale jitter + random crop, 'flip', 'color')."""
        jitter = "crop" in names
        return cls(crop=crop, scale=(0.75, 1.25) if jitter else (1.0, 1.0), flip="flip" in names,
                   color="color" in names, random_crop=True)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo if lo == hi else float(torch.empty(1).uniform_(lo, hi, generator=gen))


def augment_pair(image: np.ndarray, mask: np.ndarray, aug: SegAugment, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One (H,W,3 uint8 image, H,W uint8 mask) → (3,crop,crop uint8, crop,crop int64), the same geometry for both."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    msk = torch.from_numpy(np.ascontiguousarray(mask))[None]
    h, w = mask.shape
    crop = aug.crop
    s = _uniform(gen, *aug.scale)
    rh, rw = min(h, max(1, round(crop / s))), min(w, max(1, round(crop / s)))  # region of the source to use
    top = int(torch.randint(0, h - rh + 1, (1,), generator=gen)) if aug.random_crop else (h - rh) // 2
    left = int(torch.randint(0, w - rw + 1, (1,), generator=gen)) if aug.random_crop else (w - rw) // 2
    img = img[:, top:top + rh, left:left + rw]
    msk = msk[:, top:top + rh, left:left + rw]
    oh, ow = min(crop, max(1, round(rh * s))), min(crop, max(1, round(rw * s)))
    if (oh, ow) != (rh, rw):
        img = TF.resize(img, [oh, ow], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        msk = TF.resize(msk, [oh, ow], interpolation=TF.InterpolationMode.NEAREST_EXACT)
    if aug.flip and float(torch.rand(1, generator=gen)) < 0.5:
        img, msk = img.flip(-1), msk.flip(-1)
    if aug.color:
        b, c, sat = (float(v) for v in torch.empty(3).uniform_(0.8, 1.2, generator=gen))
        img = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), sat)
    if (oh, ow) != (crop, crop):  # pad to the crop: image with black (any value), mask with IGNORE
        img = F.pad(img, (0, crop - ow, 0, crop - oh), value=0)
        msk = F.pad(msk, (0, crop - ow, 0, crop - oh), value=IGNORE)
    return img, msk[0].long()


def augment_batch(images: list[np.ndarray], masks: list[np.ndarray], aug: SegAugment, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: (N,3,crop,crop uint8, N,crop,crop int64)."""
    pairs = [augment_pair(i, m, aug, gen) for i, m in zip(images, masks, strict=True)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def pad_to(x: torch.Tensor, divisor: int = 32, value: float = 0.0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an (N,C,H,W) tensor right/bottom to multiples of `divisor`; returns it and the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=value)
    return x, (h, w)
