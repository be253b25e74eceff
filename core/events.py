"""Typed training events. The engine emits them; recorders (run folder, CLI progress, tests) subscribe.

For every task, `val_accuracy` / `best_val_accuracy` hold the task's *primary* validation metric, named by
`FitStarted.metric` (accuracy for classification, mAP@0.5 for detection, mIoU for segmentation); a task's other
per-epoch figures (loss terms, mAP@0.5:0.95, pixel accuracy...) go in `EpochEnded.metrics`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Event:
    @property
    def type(self) -> str:
        return _NAMES[type(self)]

    def to_dict(self) -> dict:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class FitStarted(Event):
    epochs: int
    steps_per_epoch: int
    n_train: int
    n_val: int
    classes: list[str]
    device: str
    precision: str
    device_note: str
    batch_size: int
    lr: float
    resumed_from: dict | None = None
    skipped_checkpoints: list[str] = field(default_factory=list)
    metric: str = "val_accuracy"  # the task's primary validation metric (see core.tasks)
    metric_label: str = "validation accuracy"
    world_size: int = 1  # processes training together (DDP); batch_size is then the global batch


@dataclass(frozen=True)
class Preparing(Event):
    done: int
    total: int
    stage: str = "Preparing images"  # what is being prepared, as the status line names it


@dataclass(frozen=True)
class Notice(Event):
    level: str  # info | warning
    message: str


@dataclass(frozen=True)
class PhaseChanged(Event):
    epoch: int
    label: str
    trainable_params: int
    frozen_params: int


@dataclass(frozen=True)
class BatchEnded(Event):
    epoch: int
    pos: int
    step: int
    total_steps: int
    loss: float
    lr: float
    images_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class EpochEnded(Event):
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    best_val_accuracy: float
    is_best: bool
    metrics: dict = field(default_factory=dict)  # task-specific extras, e.g. {"loss_box": 0.3, "val_map": 0.41}


@dataclass(frozen=True)
class FitEnded(Event):
    state: str  # completed | stopped
    epochs_done: int
    best_val_accuracy: float | None
    seconds: float
    message: str


@dataclass(frozen=True)
class FitFailed(Event):
    reason: str
    epochs_done: int = 0


def broadcaster(subscribers) -> Callable[[Event], None]:
    """One callable that hands an event to every subscriber in order."""
    subs = tuple(subscribers)

    def emit(event: Event) -> None:
        for sub in subs:
            sub(event)

    return emit


_NAMES = {FitStarted: "fit_started", Preparing: "preparing", Notice: "notice", PhaseChanged: "phase_changed",
          BatchEnded: "batch_ended", EpochEnded: "epoch_ended", FitEnded: "fit_ended", FitFailed: "fit_failed"}
