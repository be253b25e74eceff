"""Synthetic image folders for fast tests (made with PIL at test time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def make_colour_folders(root: Path, train: int = 8, val: int = 3, size: int = 48, seed: int = 0,
                        classes: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    """root/{train,val}/<colour>/*.png: noisy images whose mean colour is the class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array(COLOURS[name], dtype=np.float32)
                img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{name}_{i}.png")
    return root
