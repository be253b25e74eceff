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


def model_with_batchnorm_statistics(name: str, seed: int = 0, num_classes: int = 0):  # noqa: ANN201 - lazy torch
    """A timm model (random weights, eval mode; a classifier of `num_classes`, none by default) whose BatchNorm
    layers have non-trivial statistics and affine parameters: fresh ones fold to almost nothing, which would hide
    folding mistakes."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def hold_training(run_dir: Path) -> None:
    """Leave a run that a page just started "training" for as long as a test needs, without its worker: the worker is
    ended and the run says it trains in this process, as `transfer-studio train` writes it. Nothing races the test."""
    import os

    from core import jobs, runs

    jobs.cancel(run_dir)
    (Path(run_dir) / jobs.JOB_FILE).unlink(missing_ok=True)
    runs.write_status(run_dir, state="running", pid=os.getpid(), message="Training (held by a test)")
