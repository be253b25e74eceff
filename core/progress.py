"""Read a run folder into what a progress view needs: status, epoch history, batch losses, phases, notices.

A run may train in several sessions (stopped, then resumed): each starts with a `fit_started` event whose
`resumed_from` names the checkpoint it continues from. The curves read here continue across sessions on the same
axes: epochs as numbered, batches by step, and time as seconds of training, counted from the first start and leaving
out the time the run was stopped.

The live progress line is read from the events too: the speed and the time left come from the current session's
batches (not the start-up before its first batch, nor an earlier session), a stop asked for shows as stopping until
the run has stopped, and a run that is starting again says so rather than showing the last session's figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core import jobs, runs
from core.report import format_duration

# a speed is told once a session's batches span this many intervals and seconds: its first two batches alone can be
# far apart or close together, and a figure from them misleads
PACE_BATCHES, PACE_SECONDS = 2, 1.0


@dataclass(frozen=True)
class Pace:
    """The current session's speed, from its batches: images per second between its first batch and its latest
    (`at`, the time that batch was written), and the seconds left at that speed."""

    images_per_second: float
    eta_seconds: float
    at: float


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
    stop_asked: float | None = None  # when Stop was pressed (the STOP file the worker honours), while it stands
    session_open: bool = False  # the latest session has started and not ended (its fit_ended not written yet)
    position: tuple[int, int] | None = None  # (epoch index, images into it) the latest session has reached
    stopped_at: dict | None = None  # the latest session's stop: {"epoch", "pos", "message"} as its fit_ended said
    pace: Pace | None = None  # the latest session's speed; None until it has a few batches (PACE_*)

    @property
    def state(self) -> str:
        """The run's state; "stopping" from the moment Stop is asked until the run has stopped (the worker's
        batch updates still say "running" meanwhile)."""
        state = self.status.get("state", "created")
        return "stopping" if state in ("queued", "running") and self.stop_asked is not None else state

    @property
    def active(self) -> bool:
        return self.state in runs.ACTIVE_STATES

    @property
    def starting(self) -> bool:
        """Active, but the session that will train has not started yet: the worker is starting, waiting for the
        device or preparing images (the events still end with the previous session, if any)."""
        if not self.active:
            return False
        if self.started is None or not self.session_open:
            return True
        return float(self.started.get("t") or 0.0) < float(self.status.get("queued_at") or 0.0)

    def stop_waited(self, now: float | None = None) -> float:
        """Seconds since Stop was asked (0 when it was not)."""
        if self.stop_asked is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.stop_asked)

    def progress_line(self, now: float | None = None) -> str:
        """The live progress text: the run's message, its speed and the time left. The time left counts down
        from the latest batch, so the line moves every second even when a batch takes longer. Stopping and
        starting say so, without a speed or a time left."""
        status = self.status
        if self.state == "stopping":
            return self.stopping_line()
        message = status.get("message") or ""
        if self.starting:
            return message or "Starting…"
        if self.pace is not None:
            speed, eta, at = self.pace.images_per_second, self.pace.eta_seconds, self.pace.at
        elif self.started is None:  # no events to read (a status alone): the worker's own figures
            speed, eta, at = status.get("images_per_second"), status.get("eta_seconds"), status.get("updated")
        else:  # this session's first batch is not done yet: no speed to tell
            speed = eta = at = None
        parts = [message]
        if speed:
            parts.append(f"{speed:.0f} images/s")
        if eta is not None:
            since = max(0.0, (time.time() if now is None else now) - float(at or 0.0))
            parts.append(f"about {format_duration(max(0.0, float(eta) - since))} left")
        return " · ".join(p for p in parts if p)

    def stopping_line(self) -> str:
        """What a run that was asked to stop is doing until it has stopped."""
        if self.starting:
            return "Stopping before training starts…"
        started = self.started or {}
        n_train, epochs = int(started.get("n_train") or 0), int(started.get("epochs") or 0)
        if self.position is not None and n_train and self.position[1] >= n_train:  # its last batch is done
            epoch = self.position[0] + 1
            if epochs and epoch >= epochs:
                return f"Finishing: epoch {epoch} of {epochs} was the last, it is being validated…"
            return f"Stopping after epoch {epoch}{f' of {epochs}' if epochs else ''} (validating it first)…"
        return "Stopping after this batch…"

    def stopped_line(self) -> str:
        """What a stopped run says: "Stopped after epoch 2 of 8" when it stopped between two epochs (rather than
        "at epoch 3, image 0"), else the run's own message."""
        message = self.status.get("message") or "Stopped."
        at = self.stopped_at
        if self.state != "stopped" or not at or at.get("message") != self.status.get("message") or at["pos"]:
            return message
        epochs = int((self.started or {}).get("epochs") or 0)
        if not at["epoch"]:
            return "Stopped before its first batch; resume to continue."
        return f"Stopped after epoch {at['epoch']}{f' of {epochs}' if epochs else ''}; resume to continue."


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
        # the latest session's batches in its current phase: (time, images done over all epochs)
        self.done: list[tuple[float, int]] = []

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
            view.position = (int(ev["epoch"]), int(ev.get("pos") or 0))
            n_train = int((view.started or {}).get("n_train") or 0)
            self.done.append((t, view.position[0] * n_train + view.position[1]))
        elif kind == "epoch_ended":
            self.clock.saw(t)
            row = {**ev, "elapsed": round(self.clock.at(t), 3)}
            view.history = [h for h in view.history if h["epoch"] != ev["epoch"]] + [row]
            view.position = (int(ev["epoch"]), 0)
        elif kind == "phase_changed":
            self.clock.saw(t)
            if not self.repeats_phase(ev):
                view.phases.append(ev)
                self.step_at_phase[ev["epoch"]] = view.steps[-1] if view.steps else 0
                # the speed is the current phase's: a head-only first epoch runs several times faster than the
                # phases after it, and a session-long average let the time left grow all through the run
                self.done = self.done[-1:]
        elif kind in ("fit_ended", "fit_failed"):
            self.clock.end(t, ev.get("seconds"))
            view.session_open = False
            if kind == "fit_ended" and ev.get("state") == "stopped" and view.position is not None:
                view.stopped_at = {"epoch": view.position[0], "pos": view.position[1], "message": ev.get("message")}
        if kind in ("notice", "fit_failed"):
            view.notices.append(ev)

    def repeats_phase(self, ev: dict) -> bool:
        """Whether a phase_changed event names the phase the run is already in: a session resumed within a phase
        (or where it begins) announces it again, and it is not a second change."""
        phases = self.view.phases
        return any(p["epoch"] == ev["epoch"] for p in phases) or (bool(phases) and phases[-1]["label"] == ev["label"])

    def fit_started(self, ev: dict) -> None:
        """A session starts: a fresh start resets what we show; a resumed one drops the steps it redoes."""
        view = self.view
        view.started = ev
        view.session_open, view.stopped_at, self.done = True, None, []
        resumed = ev.get("resumed_from")
        self.clock.begin(_event_time(ev), fresh=resumed is None)
        if resumed is None:
            view.history, view.steps, view.losses, view.phases = [], [], [], []
            self.step_of_epoch, self.step_at_phase = {}, {}
            view.position = (0, 0)
        else:
            keep = [i for i, s in enumerate(view.steps) if s <= resumed["step"]]
            view.steps = [view.steps[i] for i in keep]
            view.losses = [view.losses[i] for i in keep]
            view.phases = [p for p in view.phases if p["epoch"] <= resumed["epoch"]]  # later ones come again
            view.position = (int(resumed["epoch"]), int(resumed.get("pos") or 0))

    def finish(self) -> None:
        """Place each phase at the step it began after, total the training time, and time the latest session's
        batches (from its first batch on: loading the model and the images before it is not training speed)."""
        view = self.view
        for ph in view.phases:
            ph["step"] = self.step_of_epoch.get(ph["epoch"], self.step_at_phase.get(ph["epoch"], 0))
        view.seconds = round(self.clock.total, 3)
        started = view.started or {}
        total = int(started.get("epochs") or 0) * int(started.get("n_train") or 0)
        if len(self.done) > PACE_BATCHES and total:
            (t0, done0), (t1, done1) = self.done[0], self.done[-1]
            if t1 - t0 >= PACE_SECONDS and done1 > done0:
                rate = (done1 - done0) / (t1 - t0)
                view.pace = Pace(round(rate, 2), round(max(0, total - done1) / rate, 1), t1)


def _stop_asked(run_dir: Path) -> float | None:
    """When Stop was asked for the run's current job (the STOP file, removed when the job ends or starts again)."""
    path = run_dir / "STOP"
    try:
        text, written = path.read_text().strip(), path.stat().st_mtime
    except OSError:
        return None
    try:
        return float(text)
    except ValueError:  # not the time jobs.stop writes: asked when the file was written
        return written


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
    view.stop_asked = _stop_asked(run_dir)
    reader = _Reader(view)
    for ev in runs.read_events(run_dir):
        reader.read(ev)
    reader.finish()
    view.queue_position = jobs.queue_position(run_dir)
    return view
