"""Subscribers to engine events: the run-folder recorder (events.jsonl + status.json) and a text progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from core import runs
from core.events import BatchEnded, EpochEnded, Event, FitEnded, FitFailed, FitStarted, Notice, Preparing


class RunRecorder:
    """Appends every event to events.jsonl and keeps status.json current (batch updates at most every 0.5 s)."""

    def __init__(self, run_dir: Path, min_interval: float = 0.5) -> None:
        self.run_dir, self.min_interval, self._last = Path(run_dir), min_interval, 0.0
        self._epochs, self._n_train = 0, 0  # from FitStarted: the progress line counts images within the epoch

    def __call__(self, event: Event) -> None:
        now = time.time()
        if isinstance(event, Preparing):
            if event.done == event.total or now - self._last >= self.min_interval:
                self._last = now
                runs.write_status(self.run_dir, state="running", phase="preparing",
                                  message=f"{event.stage} {event.done}/{event.total}", progress=0.0)
            return
        runs.append_event(self.run_dir, event.to_dict())
        if isinstance(event, FitStarted):
            self._epochs, self._n_train = event.epochs, event.n_train
            runs.write_status(self.run_dir, state="running", phase="training", epochs=event.epochs,
                              device=event.device, precision=event.precision, device_note=event.device_note,
                              metric=event.metric, metric_label=event.metric_label,
                              message="Training started" if not event.resumed_from else "Resumed training")
        elif isinstance(event, BatchEnded):
            if now - self._last >= self.min_interval:
                self._last = now
                runs.write_status(self.run_dir, state="running", epoch=event.epoch, step=event.step,
                                  total_steps=event.total_steps, progress=event.step / max(1, event.total_steps),
                                  images_per_second=event.images_per_second, eta_seconds=event.eta_seconds,
                                  message=self._where(event))
        elif isinstance(event, EpochEnded):
            runs.write_status(self.run_dir, best_val_accuracy=event.best_val_accuracy, epochs_done=event.epoch,
                              last_val_accuracy=event.val_accuracy)
        elif isinstance(event, FitEnded):
            from core.progress import training_seconds  # (progress reads what this writes)

            runs.write_status(self.run_dir, state=event.state, message=event.message,
                              seconds=max(event.seconds, training_seconds(self.run_dir)),  # every session's
                              best_val_accuracy=event.best_val_accuracy, epochs_done=event.epochs_done,
                              progress=1.0 if event.state == "completed" else None, ended=time.time())
        elif isinstance(event, FitFailed):
            runs.write_status(self.run_dir, state="failed", message=event.reason, ended=time.time())


    def _where(self, event: BatchEnded) -> str:
        """'Epoch 2 of 3, image 96 of 245': within the epoch, as a stop names it (steps count over all epochs)."""
        of = f" of {self._epochs}" if self._epochs else ""
        images = f", image {event.pos} of {self._n_train}" if self._n_train else f", step {event.step}"
        return f"Epoch {event.epoch + 1}{of}{images}"


class TextProgress:
    """A one-line progress bar on a terminal (stderr), plus one line per epoch."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width, self.metric = stream, width, "acc"

    def __call__(self, event: Event) -> None:
        out = self.stream
        if isinstance(event, FitStarted):
            self.metric = "acc" if event.metric == "val_accuracy" else event.metric.removeprefix("val_")
            where = "resuming" if event.resumed_from else "training"
            out.write(f"{where} on {event.device} ({event.precision}): {event.n_train} train / {event.n_val} val "
                      f"images, {len(event.classes)} classes, {event.epochs} epochs\n")
        elif isinstance(event, Preparing) and (event.done == event.total or event.done % 64 == 0):
            out.write(f"\r{event.stage.lower()} {event.done}/{event.total}")
            if event.done == event.total:
                out.write("\n")
        elif isinstance(event, BatchEnded):
            frac = event.step / max(1, event.total_steps)
            bar = "#" * int(frac * self.width)
            out.write(f"\r[{bar:<{self.width}}] step {event.step}/{event.total_steps} loss {event.loss:.3f} "
                      f"{event.images_per_second:.0f} img/s ETA {event.eta_seconds:.0f}s ")
        elif isinstance(event, EpochEnded):
            train_acc = f" acc {event.train_accuracy:.3f}" if self.metric == "acc" else ""
            out.write(f"\nepoch {event.epoch}: train loss {event.train_loss:.3f}{train_acc} | "
                      f"val loss {event.val_loss:.3f} {self.metric} {event.val_accuracy:.3f} ({event.seconds:.0f}s)\n")
        elif isinstance(event, Notice):
            out.write(f"\n{event.level}: {event.message}\n")
        elif isinstance(event, FitEnded | FitFailed):
            out.write(f"\n{getattr(event, 'message', '') or getattr(event, 'reason', '')}\n")
        out.flush()
