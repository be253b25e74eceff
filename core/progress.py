"""Read a run folder into what a progress view needs: status, epoch history, batch losses, phases, notices.

A run may train in several sessions (stopped, then resumed): each starts with a `fit_started` event whose
`resumed_from` names the checkpoint it continues from. The curves read here continue across sessions on the same
axes: epochs as numbered, batches by step, and time as seconds of training, counted from the first start and leaving
out the time the run was stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core import jobs, runs
from core.report import format_duration


@dataclass
class RunView:
    """A run as its pages show it. Each `history` row is an `epoch_ended` event plus `elapsed`, the seconds of training
    (all sessions) when the epoch ended; `seconds` is the time spent training over all sessions so far."""

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
    seconds: float = 0.0

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


@dataclass
class TrainingClock:
    """Seconds of training across a run's sessions, from the event times (`t`): the time between a session's end
    and the next one's start (stopped, waiting, crashed) does not count."""

    before: float = 0.0  # seconds of the sessions before the current one
    start: float | None = None  # when the current session's fit_started was written
    last: float | None = None  # the current session's latest training event
    reported: float = 0.0  # the seconds its fit_ended reports (from fit() being called: loading counts too)
    closed: bool = True  # the current session has ended (what follows belongs to the next one)

    def begin(self, t: float, fresh: bool) -> None:
        """A session starts at `t`; a fresh start (nothing resumed) counts from zero again."""
        self.before = 0.0 if fresh else self.total
        self.start = self.last = t
        self.reported, self.closed = 0.0, False

    def saw(self, t: float) -> None:
        """The current session wrote a training event at `t`."""
        if not self.closed and self.last is not None:
            self.last = max(self.last, t)

    def end(self, t: float, seconds: float | None = None) -> None:
        """The current session ended at `t`, reporting `seconds` of its own (none when it failed)."""
        self.saw(t)
        if not self.closed:
            self.reported, self.closed = max(0.0, float(seconds or 0.0)), True

    def at(self, t: float) -> float:
        """Seconds of training at time `t` of the current session."""
        return self.before + max(0.0, t - (self.start if self.start is not None else t))

    @property
    def total(self) -> float:
        """Seconds of training so far: the sessions before plus the current one, as it reports or as its events
        span when it has not ended or did not say (crashed, cancelled, failed)."""
        if self.start is None or self.last is None:
            return self.before
        return self.before + max(self.reported, self.last - self.start)


def _event_time(ev: dict) -> float:
    return float(ev.get("t") or 0.0)


class _Reader:
    """Folds a run's events, in order, into a RunView."""

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.clock = TrainingClock()
        self.step_of_epoch: dict[int, int] = {}  # the step before an epoch's first batch
        self.step_at_phase: dict[int, int] = {}  # the last step seen when a phase began (its epoch may have none)

    def read(self, ev: dict) -> None:
        """Take in one event."""
        kind, view, t = ev.get("type"), self.view, _event_time(ev)
        if kind == "fit_started":
            self.fit_started(ev)
        elif kind == "batch_ended":
            self.clock.saw(t)
            view.steps.append(ev["step"])
            view.losses.append(ev["loss"])
            self.step_of_epoch.setdefault(ev["epoch"], ev["step"] - 1)
        elif kind == "epoch_ended":
            self.clock.saw(t)
            row = {**ev, "elapsed": round(self.clock.at(t), 3)}
            view.history = [h for h in view.history if h["epoch"] != ev["epoch"]] + [row]
        elif kind == "phase_changed":
            self.clock.saw(t)
            if not any(p["epoch"] == ev["epoch"] for p in view.phases):
                view.phases.append(ev)
                self.step_at_phase[ev["epoch"]] = view.steps[-1] if view.steps else 0
        elif kind in ("fit_ended", "fit_failed"):
            self.clock.end(t, ev.get("seconds"))
        if kind in ("notice", "fit_failed"):
            view.notices.append(ev)

    def fit_started(self, ev: dict) -> None:
        """A session starts: a fresh start resets what we show; a resumed one drops the steps it redoes."""
        view = self.view
        view.started = ev
        resumed = ev.get("resumed_from")
        self.clock.begin(_event_time(ev), fresh=resumed is None)
        if resumed is None:
            view.history, view.steps, view.losses, view.phases = [], [], [], []
            self.step_of_epoch, self.step_at_phase = {}, {}
        else:
            keep = [i for i, s in enumerate(view.steps) if s <= resumed["step"]]
            view.steps = [view.steps[i] for i in keep]
            view.losses = [view.losses[i] for i in keep]

    def finish(self) -> None:
        """Place each phase at the step it began after, and total the training time."""
        for ph in self.view.phases:
            ph["step"] = self.step_of_epoch.get(ph["epoch"], self.step_at_phase.get(ph["epoch"], 0))
        self.view.seconds = round(self.clock.total, 3)


def training_seconds(run_dir: Path) -> float:
    """Seconds spent training over all of a run's sessions (stopped, then resumed: both count)."""
    reader = _Reader(RunView(Path(run_dir), {}, {}))
    for ev in runs.read_events(Path(run_dir)):
        reader.read(ev)
    reader.finish()
    return reader.view.seconds


def read_run(run_dir: Path) -> RunView:
    """Everything the Train page shows, from the run folder alone (liveness checked: a dead worker = crashed)."""
    run_dir = Path(run_dir)
    view = RunView(run_dir, jobs.state(run_dir), runs.read_json_config(run_dir))
    reader = _Reader(view)
    for ev in runs.read_events(run_dir):
        reader.read(ev)
    reader.finish()
    view.queue_position = jobs.queue_position(run_dir)
    return view
