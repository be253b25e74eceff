"""Task registry: each task (classification now; detection, segmentation, faces later) plugs in here with the same
small interface, so pages, CLI and engine ask the task instead of testing `if task == ...` everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn


class Task(Protocol):
    """What every task provides."""

    name: str
    title: str
    description: str

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module: ...


@dataclass(frozen=True)
class TaskInfo:
    name: str
    title: str
    description: str
    available: bool


def _registry() -> dict[str, Task]:
    from core.tasks.classification import CLASSIFICATION

    return {CLASSIFICATION.name: CLASSIFICATION}


PLANNED = (
    TaskInfo("detection", "Object detection", "Find and box objects in photos.", False),
    TaskInfo("segmentation", "Segmentation", "Colour every pixel by what it shows.", False),
    TaskInfo("faces", "Face recognition", "Enrol people, then name them or answer 'unknown'.", False),
)


def get_task(name: str) -> Task:
    """The task called `name` (e.g. 'classification')."""
    tasks = _registry()
    if name not in tasks:
        raise KeyError(f"Unknown or not yet available task '{name}'. Available: {', '.join(tasks)}.")
    return tasks[name]


def list_tasks() -> list[TaskInfo]:
    """Available tasks first, then the ones still to come."""
    done = [TaskInfo(t.name, t.title, t.description, True) for t in _registry().values()]
    return done + [p for p in PLANNED if p.name not in {d.name for d in done}]
