"""Read a run folder into what a progress view needs: status, epoch history, batch losses, phases, notices."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core import jobs, runs
from core.report import format_duration


@dataclass
class RunView:
    run_dir: Path
    status: dict
    config: dict
    history: list[dict] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    phases: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    started: dict | None = None
    queue_position: int | None = None

    @property
    def state(self) -> str:
        return self.status.get("state", "created")

    @property
    def active(self) -> bool:
        return self.state in runs.ACTIVE_STATES

    def progress_line(self, now: float | None = None) -> str:
        """The live progress text: the run's message, its speed and the time left. The time left counts down
        from the last status write, so the line moves every second even when a batch takes longer."""
        status = self.status
        parts = [status.get("message") or ""]
        if status.get("images_per_second"):
            parts.append(f"{status['images_per_second']:.0f} images/s")
        eta = status.get("eta_seconds")
        if eta is not None:
            since = max(0.0, (time.time() if now is None else now) - float(status.get("updated") or 0.0))
            parts.append(f"about {format_duration(max(0.0, float(eta) - since))} left")
        return " · ".join(p for p in parts if p)


def read_run(run_dir: Path) -> RunView:
    """Everything the Train page shows, from the run folder alone (liveness checked: a dead worker = crashed)."""
    run_dir = Path(run_dir)
    status = jobs.state(run_dir)
    view = RunView(run_dir, status, runs.read_json_config(run_dir))
    step_of_epoch: dict[int, int] = {}
    for ev in runs.read_events(run_dir):
        kind = ev.get("type")
        if kind == "fit_started":
            view.started = ev
            resumed = ev.get("resumed_from")
            if resumed is None:  # a fresh start resets what we show
                view.history, view.steps, view.losses, view.phases = [], [], [], []
            else:  # steps after the checkpoint were redone: keep the new ones only
                keep = [i for i, s in enumerate(view.steps) if s <= resumed["step"]]
                view.steps = [view.steps[i] for i in keep]
                view.losses = [view.losses[i] for i in keep]
        elif kind == "batch_ended":
            view.steps.append(ev["step"])
            view.losses.append(ev["loss"])
            step_of_epoch.setdefault(ev["epoch"], ev["step"] - 1)
        elif kind == "epoch_ended":
            view.history = [h for h in view.history if h["epoch"] != ev["epoch"]] + [ev]
        elif kind == "phase_changed":
            if not any(p["epoch"] == ev["epoch"] for p in view.phases):
                view.phases.append(ev)
        elif kind in ("notice", "fit_failed"):
            view.notices.append(ev)
    for ph in view.phases:
        ph["step"] = step_of_epoch.get(ph["epoch"], 0)
    view.queue_position = jobs.queue_position(run_dir)
    return view
