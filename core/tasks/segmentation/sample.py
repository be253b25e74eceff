"""The segmentation sample set, made offline at setup: shapes (circles, squares, triangles) drawn on scikit-image's
bundled CC0 textures, with exact id masks drawn from the same geometry (no anti-aliasing, so every mask pixel is
exactly its shape's class).

    segmentation_shapes/{train,val}/{images,masks}/*.png + classes.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

VERSION = 1
FOLDER = "segmentation_shapes"
CLASSES = ("background", "circle", "square", "triangle")
COUNTS = {"train": 48, "val": 16}
SIZE = (160, 128)


def _textures() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("brick", "grass", "gravel")]


def _background(textures: list[Image.Image], rng: np.random.Generator) -> Image.Image:
    tex = textures[int(rng.integers(len(textures)))]
    w, h = SIZE
    side = int(rng.integers(max(w, h), min(tex.width, tex.height)))
    x, y = int(rng.integers(0, tex.width - side + 1)), int(rng.integers(0, tex.height - side + 1))
    img = tex.crop((x, y, x + side, y + side)).resize((w, w), Image.Resampling.BILINEAR).crop((0, 0, w, h))
    return ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.6, 1.1)))


def _shape(draw_img: ImageDraw.ImageDraw, draw_mask: ImageDraw.ImageDraw, kind: int, rng: np.random.Generator
           ) -> None:
    w, h = SIZE
    r = int(rng.integers(12, 30))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if kind == 1:
        box = (cx - r, cy - r, cx + r, cy + r)
        draw_img.ellipse(box, fill=colour)
        draw_mask.ellipse(box, fill=1)
    elif kind == 2:
        box = (cx - r, cy - r, cx + r, cy + r)
        draw_img.rectangle(box, fill=colour)
        draw_mask.rectangle(box, fill=2)
    else:
        pts = [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
        draw_img.polygon(pts, fill=colour)
        draw_mask.polygon(pts, fill=3)


def make_pair(textures: list[Image.Image], rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One image and its exact class-id mask (L mode: 0 background, 1 circle, 2 square, 3 triangle)."""
    img = _background(textures, rng)
    mask = Image.new("L", SIZE, 0)
    di, dm = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        _shape(di, dm, int(rng.integers(1, 4)), rng)
    return img, mask


def make(dest: Path, seed: int = 0) -> Path:
    """Write the sample set under `dest/segmentation_shapes` (deterministic for a seed); returns the folder."""
    root = Path(dest) / FOLDER
    rng = np.random.default_rng(seed)
    textures = _textures()
    for split, count in COUNTS.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, mask = make_pair(textures, rng)
            img.save(root / split / "images" / f"shapes_{split}_{i:03d}.png")
            mask.save(root / split / "masks" / f"shapes_{split}_{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root
