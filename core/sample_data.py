"""Sample datasets made offline from scikit-image's bundled CC0 images (run by the setup step).

`textures`: brick / grass / gravel crops at random scales, rotations and brightness; a 3-class set that a
pretrained backbone separates well in seconds, so the first-run demo works end to end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

VERSION = 1
TEXTURES = ("brick", "grass", "gravel")
PER_CLASS = {"train": 40, "val": 12}
SIZE = 160


def _texture(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _random_crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(96, 320))
    x = int(rng.integers(0, img.width - side))
    y = int(rng.integers(0, img.height - side))
    crop = img.crop((x, y, x + side, y + side)).rotate(int(rng.choice([0, 90, 180, 270])))
    crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))
    crop = ImageEnhance.Contrast(crop).enhance(float(rng.uniform(0.8, 1.2)))
    return crop.resize((SIZE, SIZE), Image.Resampling.BILINEAR)


def make_textures(dest: Path, seed: int = 0) -> Path:
    """Write `dest/textures/{train,val}/<class>/*.jpg` (deterministic for a seed)."""
    root = dest / "textures"
    rng = np.random.default_rng(seed)
    for name in TEXTURES:
        img = _texture(name)
        for split, count in PER_CLASS.items():
            out = root / split / name
            out.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _random_crop(img, rng).save(out / f"{name}_{i:03d}.jpg", quality=90)
    return root


def _makers() -> list[tuple[str, int, Callable[[Path], Path]]]:
    """(name, version, make) of every sample: textures here, plus each task's `core.tasks.<task>.sample` module
    (a `VERSION` int and `make(dest) -> folder`) when that task has one."""
    import importlib

    from core.tasks import ORDER

    found = [("textures", VERSION, make_textures)]
    for task in ORDER:
        name = f"core.tasks.{task}.sample"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name in (name, f"core.tasks.{task}"):
                continue
            raise
        found.append((task, int(getattr(module, "VERSION", 1)), module.make))
    return found


def ensure_samples(dest: Path) -> list[Path]:
    """Create the sample datasets under `dest` unless this version of each is already there; returns their
    folders. The stamp (samples.json) records each sample's version, so a new sample is made without redoing the
    others."""
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / "samples.json"
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = {}
    versions = old.get("versions") or ({"textures": old["version"]} if "version" in old else {})
    made, done = [], {}
    for name, version, make in _makers():
        folder = Path(old.get("folders", {}).get(name, dest / name))
        if versions.get(name) != version or not folder.is_dir():
            folder = make(dest)
        made.append(folder)
        done[name] = version
    stamp.write_text(json.dumps({"version": VERSION, "versions": done, "datasets": [p.name for p in made],
                                 "folders": {n: str(p) for n, p in zip(done, made, strict=True)},
                                 "source": "scikit-image bundled images (CC0) and generated shapes"}, indent=1))
    return made


def main(argv: list[str]) -> int:
    from core.settings import sample_data_root

    dest = Path(argv[0]) if argv else sample_data_root()
    for path in ensure_samples(dest):
        print(f"sample data ready: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
