"""Task registry: each task (classification, detection, segmentation, faces) plugs in here with the same small
interface, so the worker, CLI and pages ask the task instead of testing `if task == ...` everywhere.

A task lives in `core/tasks/<name>.py` or `core/tasks/<name>/__init__.py` and exposes `TASK`, an object with:

- `name`, `title`, `description`: identity and one line for people;
- `metric`, `metric_label`: the primary validation metric key written in `EpochEnded.val_accuracy`'s place
  (e.g. "val_map50", "mAP@0.5") and its label for people;
- `build_model(backbone, num_classes, pretrained)`: the model (backbone from `core.zoo` + the task's head);
- `resolve_data(dataset, seed) -> dict`: the dataset manifest frozen into a new run folder (`dataset` is a stored
  dataset id, a folder path or "sample:NAME"); raises `core.trainset.DatasetProblem` with a message for people;
- `fit(run_dir, subscribers, should_stop) -> FitResult`: train the run folder (called by the worker and the CLI);
- `has_quick`: whether the Train page offers the quick (cached-embedding) model;
- optional `train_options`: which Train page extras apply ("lr_finder", "class_weights", "crop_size" with
  `full_crop`, the side train_size = 0 means; default the first two);
- optional `export_formats`: the formats its runs export to (default safetensors, onnx, torchscript), or
  `export_formats_for(backbone)` when they depend on the model (`export_formats()` asks either);
- optional `default_train() -> TrainConfig`: the task's winning defaults for the Train page (else TrainConfig());
- optional `model_note` (shown on the Model page, e.g. what is and is not pretrained) and `head_label` (the
  task's own layers that always train, named on the Layers page);
- optional `ensure_sample() -> str`: import the task's sample set (made by `core/tasks/<task>/sample.py` at setup:
  `VERSION` and `make(dest) -> folder`) into the store and return its dataset id (Home's "Try it" button);
- `cli(command, args) -> int`: `train | evaluate | predict | export` for `--task NAME` runs (classification keeps
  its own commands in `core.cli`/`core.cli_eval`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.config import FreezeConfig, TrainConfig

if TYPE_CHECKING:  # torch is imported by the tasks themselves, not by choosing one (the command line's start)
    from torch import nn

ORDER = ("classification", "detection", "segmentation", "faces")
#: Each task's title, readable without importing the task (tables of runs list them; a task imports timm).
TITLES = {"classification": "Image classification", "detection": "Object detection",
          "segmentation": "Segmentation", "faces": "Face recognition"}
#: Models a task uses as they come, with nothing to train (no layers to freeze, no epochs): faces' dlib embedder
#: (`core.tasks.faces.embed.FACE_MODELS`). Here so that listing runs needs no torch.
USED_AS_IS = frozenset({"dlib_resnet_face"})


def photos_name(manifest: dict, dataset: str) -> str:
    """The photos' name for a run's name (the set's name, else its folder's): runs told apart at a glance."""
    source = manifest.get("source") or {}
    return str(source.get("name") or Path(source.get("path") or dataset.split(":")[-1]).name)[:40]


def run_name(task: str, model: str, manifest: dict, dataset: str, quick: bool = False) -> str:
    """A new run's name, the same from the Train pages and the command line: "Fine-tune · mobilenetv2_100 ·
    hymenoptera", "Quick model · …", "… · Segmentation", "Face model (frozen) · Team Blue"."""
    photos = photos_name(manifest, dataset)
    if task == "faces":
        return ("Face model (frozen)" if model in USED_AS_IS else f"Fine-tune · {model}") + f" · {photos}"
    return (f"{'Quick model' if quick else 'Fine-tune'} · {model} · {photos}"
            + ("" if task == "classification" else f" · {TITLES.get(task, task)}"))


class Task(Protocol):
    """What every task provides."""

    name: str
    title: str
    description: str
    metric: str
    metric_label: str

    has_quick: bool

    def build_model(self, backbone: str, num_classes: int, pretrained: bool = True) -> nn.Module: ...

    def resolve_data(self, dataset: str, seed: int = 0) -> dict: ...

    def fit(self, run_dir: Path, subscribers: Sequence[Callable[[Any], None]] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Any: ...

    def cli(self, command: str, args: argparse.Namespace) -> int: ...


@dataclass(frozen=True)
class TaskInfo:
    name: str
    title: str
    description: str
    available: bool


PLANNED = {
    "detection": TaskInfo("detection", "Object detection", "Find and box objects in photos.", False),
    "segmentation": TaskInfo("segmentation", "Segmentation", "Colour every pixel by what it shows.", False),
    "faces": TaskInfo("faces", "Face recognition", "Enrol people, then name them or answer 'unknown'.", False),
}


def _load(name: str) -> Task | None:
    """The task module's TASK, or None when that task is not built yet (its module is absent)."""
    module_name = f"core.tasks.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None
        raise
    return getattr(module, "TASK", None)


def _registry() -> dict[str, Task]:
    found = {}
    for name in ORDER:
        task = _load(name)
        if task is not None:
            found[name] = task
    return found


def get_task(name: str) -> Task:
    """The task called `name` (e.g. 'classification')."""
    task = _load(name) if name in ORDER else None
    if task is None:
        available = ", ".join(_registry())
        raise KeyError(f"Unknown or not yet available task '{name}'. Available: {available}.")
    return task


def train_defaults(task: Task) -> TrainConfig:
    """The task's measured training defaults (`default_train()`), else the generic TrainConfig()."""
    return task.default_train() if hasattr(task, "default_train") else TrainConfig()


def export_formats(task: Task, backbone: str) -> tuple[str, ...]:
    """The formats a run of `task` on `backbone` can be exported to: the task's own rule (`export_formats_for`,
    e.g. the frozen face model has no network), else its `export_formats`, else every format."""
    if hasattr(task, "export_formats_for"):
        return tuple(task.export_formats_for(backbone))
    from core.export import FORMATS

    return tuple(getattr(task, "export_formats", FORMATS))


def freeze_defaults(task: Task) -> FreezeConfig:
    """The task's default of what trains (`default_freeze()`), else the generic FreezeConfig() (head only)."""
    return task.default_freeze() if hasattr(task, "default_freeze") else FreezeConfig()


def task_names() -> list[str]:
    """The names of the tasks built so far, in the app's order, found without importing them (the command line's
    choices: importing the tasks pulls in timm, seconds before any command could run)."""
    return [name for name in ORDER if importlib.util.find_spec(f"core.tasks.{name}") is not None]


def list_tasks() -> list[TaskInfo]:
    """Every task in the app's order, marked available or still to come."""
    found = _registry()
    rows = []
    for name in ORDER:
        if name in found:
            t = found[name]
            rows.append(TaskInfo(t.name, t.title, t.description, True))
        elif name in PLANNED:
            rows.append(PLANNED[name])
    return rows


def available_task_names() -> list[str]:
    return [t.name for t in list_tasks() if t.available]


def task_of(path: str | Path) -> str:
    """The task of a run folder (config.json) or an export folder (manifest.json); 'classification' otherwise.

    Used by `evaluate | predict | export` to hand a run to its task's commands."""
    import json

    folder = Path(path)
    for name in ("config.json", "manifest.json"):
        file = folder / name
        if folder.is_dir() and file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            task = data.get("task") if isinstance(data, dict) else None
            if isinstance(task, str) and task:
                return task
    return "classification"
