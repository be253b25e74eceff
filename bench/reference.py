"""The PyTorch transfer-learning tutorial's two recipes, written faithfully from its public text, on MobileNetV2 with
the same packaged ImageNet weights as the app (https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html):

- fine-tune: every layer trains; SGD lr 0.001 momentum 0.9; StepLR(step_size=7, gamma=0.1); batch 4;
- fixed feature extractor: only the new last layer trains (same optimizer settings on its parameters).

Transforms as in the tutorial: train RandomResizedCrop(224) + RandomHorizontalFlip, val Resize(256) + CenterCrop(224),
ImageNet mean/std; model.train() during training (so BatchNorm statistics keep updating, as in the tutorial); fp32.
The tutorial's DataLoader uses 4 workers; on this 2-core machine workers fight the compute threads (measured slower),
so `workers` defaults to 0 — the only departure, and it helps the reference. Training stops at the time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class RecipeResult:
    name: str
    curve: list[dict]  # epoch, seconds (since start, incl. setup), val_accuracy, train_images_per_second
    stopped_by_budget: bool


def tutorial_loaders(data: Path, batch: int = 4, workers: int = 0, seed: int = 0):
    """The tutorial's ImageFolder datasets and loaders (data/train, data/val)."""
    tf = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                   transforms.Normalize(MEAN, STD)]),
    }
    sets = {s: datasets.ImageFolder(str(data / s), tf[s]) for s in ("train", "val")}
    gen = torch.Generator().manual_seed(seed)
    loaders = {s: torch.utils.data.DataLoader(sets[s], batch_size=batch, shuffle=s == "train", num_workers=workers,
                                              generator=gen if s == "train" else None) for s in sets}
    return sets, loaders


def tutorial_model(num_classes: int, fixed_features: bool, arch: str = "mobilenet_v2") -> nn.Module:
    """MobileNetV2 with the packaged weights and a new last layer; frozen except that layer for `fixed_features`.
    `arch="test"` builds a tiny random CNN for smoke tests."""
    if arch == "test":
        model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, num_classes))
        last = model[-1]
    else:
        from core.zoo import create_torchvision_mobilenet_v2

        model = create_torchvision_mobilenet_v2(num_classes)
        last = model.classifier[-1]
    if fixed_features:
        for p in model.parameters():
            p.requires_grad = False
        for p in last.parameters():
            p.requires_grad = True
    return model


def run_tutorial(data: Path, fixed_features: bool, budget_s: float, max_epochs: int = 25, arch: str = "mobilenet_v2",
                 workers: int = 0, seed: int = 0, on_epoch: Callable[[dict], None] | None = None) -> RecipeResult:
    """Train as the tutorial does until `max_epochs` or the time budget; validation accuracy after each epoch."""
    torch.manual_seed(seed)
    t0 = time.time()
    sets, loaders = tutorial_loaders(data, workers=workers, seed=seed)
    model = tutorial_model(len(sets["train"].classes), fixed_features, arch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    curve, stopped = [], False
    for epoch in range(max_epochs):
        model.train()
        seen, t_ep = 0, time.time()
        for x, y in loaders["train"]:
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
            if time.time() - t0 > budget_s:
                stopped = True
                break
        train_ips = seen / max(1e-6, time.time() - t_ep)
        if stopped:
            break
        sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                correct += int((model(x).argmax(1) == y).sum())
        row = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1),
               "val_accuracy": correct / len(sets["val"]), "train_images_per_second": round(train_ips, 1)}
        curve.append(row)
        if on_epoch:
            on_epoch(row)
    name = "tutorial fixed-feature" if fixed_features else "tutorial fine-tune"
    return RecipeResult(name, curve, stopped)
