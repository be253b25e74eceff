"""Reading a run folder for the progress views (core.progress): the live progress line, and curves that continue on
the same axes when a run is stopped and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import engine, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.events import BatchEnded
from core.plots import batch_loss_figure, epoch_curves
from core.progress import RunView, read_run
from core.recorder import RunRecorder
from tests.synthetic import make_colour_folders


def _view(**status) -> RunView:
    return RunView(Path("."), status, {})


def test_time_left_counts_down_between_status_writes() -> None:
    view = _view(message="Epoch 2/5", images_per_second=31.4, eta_seconds=125.0, updated=1000.0)
    assert view.progress_line(now=1000.0) == "Epoch 2/5 · 31 images/s · about 2 min 5 s left"
    assert view.progress_line(now=1003.0).endswith("about 2 min 2 s left")  # moves although nothing was written
    assert view.progress_line(now=2000.0).endswith("about 0 s left")  # never negative
    assert view.progress_line(now=1005.4).endswith("about 2 min 0 s left")  # 119.6 s rounds as a whole


def test_progress_line_leaves_out_what_is_not_known() -> None:
    assert _view(message="Preparing").progress_line(now=5.0) == "Preparing"
    assert _view(message="", eta_seconds=4000.0, updated=5.0).progress_line(now=5.0) == "about 1 h 6 min left"


def _stopped_gradual_run(root: Path, stop_after: int) -> Path:
    """A gradual run of 3 epochs on 24 training photos (6 batches of 4 per epoch), stopped after `stop_after`
    batches."""
    data = make_colour_folders(root / "data")
    cfg = RunConfig("test_efficientnet", str(data), FreezeConfig("gradual"),
                    TrainConfig(epochs=3, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    batches: list[BatchEnded] = []

    def count(event) -> None:
        if isinstance(event, BatchEnded):
            batches.append(event)

    stop = lambda: len(batches) >= stop_after  # noqa: E731
    assert engine.fit(run_dir, [count, RunRecorder(run_dir)], should_stop=stop).state == "stopped"
    return run_dir


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunView]:
    """A gradual run of 3 epochs (6 steps each) stopped where its second phase begins, as Stop pressed between two
    epochs leaves it, read then; and resumed to the end."""
    run_dir = _stopped_gradual_run(tmp_path_factory.mktemp("resumed"), stop_after=6)
    at_stop = read_run(run_dir)
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    return run_dir, at_stop


def test_a_phase_that_begins_at_a_stop_is_marked_after_the_last_step(resumed: tuple[Path, RunView]) -> None:
    _, view = resumed
    assert [(p["epoch"], p["step"]) for p in view.phases] == [(0, 0), (1, 6)]  # was step 0: no batch of epoch 2 yet
    steps = [{"step": p["step"], "label": p["label"]} for p in view.phases]
    assert list(batch_loss_figure(view.steps, view.losses, steps).layout.xaxis.range) == [1, 6]


def test_a_resumed_run_draws_its_curves_on_the_axes_of_an_uninterrupted_one(resumed: tuple[Path, RunView]) -> None:
    view = read_run(resumed[0])
    assert [h["epoch"] for h in view.history] == [1, 2, 3] and view.steps == list(range(1, 19))
    assert [(p["epoch"], p["step"]) for p in view.phases] == [(0, 0), (1, 6)]
    for metric in ("loss", "accuracy"):  # the axis spans the epochs (a phase label used to stretch it to -1)
        lo, hi = epoch_curves(view.history, metric, view.phases).layout.xaxis.range
        assert 0.5 <= lo < 1 and 3 < hi <= 3.5
    lo, hi = batch_loss_figure(view.steps, view.losses, view.phases).layout.xaxis.range
    assert (lo, hi) == (1, 18)
    accuracy = epoch_curves(view.history, "accuracy", view.phases).layout.yaxis.autorangeoptions.maxallowed
    assert accuracy is not None and 1 <= accuracy < 1.1  # a flat 100 % used to get an axis up to 2
    elapsed = [h["elapsed"] for h in view.history]  # seconds of training, from the first start
    assert 0 < elapsed[0] < elapsed[1] < elapsed[2] <= view.seconds


def test_the_training_time_adds_up_every_session(resumed: tuple[Path, RunView]) -> None:
    run_dir, at_stop = resumed
    sessions = [e["seconds"] for e in runs.read_events(run_dir, ("fit_ended",))]
    assert len(sessions) == 2 and at_stop.seconds == pytest.approx(sessions[0], abs=0.01)
    assert read_run(run_dir).seconds == pytest.approx(sum(sessions), abs=0.01)
    assert runs.read_status(run_dir)["seconds"] == pytest.approx(sum(sessions), abs=0.01)  # Runs table, CLI


def _write_events(run_dir: Path, events: list[dict]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def test_time_between_sessions_does_not_count(tmp_path: Path) -> None:
    """Stopped after 2 epochs (27 s, 2 of them loading), resumed, crashed 13 s later, resumed again for 12 s."""
    _write_events(tmp_path / "run", [
        {"t": 100.0, "type": "fit_started", "resumed_from": None},
        {"t": 104.0, "type": "batch_ended", "epoch": 0, "step": 1, "loss": 1.0},
        {"t": 110.0, "type": "epoch_ended", "epoch": 1},
        {"t": 120.0, "type": "epoch_ended", "epoch": 2},
        {"t": 125.0, "type": "fit_ended", "state": "stopped", "seconds": 27.0},
        {"t": 990.0, "type": "notice", "level": "info", "message": "written while the next session loads"},
        {"t": 1000.0, "type": "fit_started", "resumed_from": {"epoch": 2, "pos": 0, "step": 2}},
        {"t": 1010.0, "type": "epoch_ended", "epoch": 3},
        {"t": 1013.0, "type": "batch_ended", "epoch": 3, "step": 4, "loss": 1.0},  # then the process died
        {"t": 5000.0, "type": "fit_started", "resumed_from": {"epoch": 3, "pos": 0, "step": 3}},
        {"t": 5010.0, "type": "epoch_ended", "epoch": 4},
        {"t": 5011.0, "type": "fit_ended", "state": "completed", "seconds": 12.0},
    ])
    view = read_run(tmp_path / "run")
    assert [h["elapsed"] for h in view.history] == [10.0, 20.0, 37.0, 50.0]
    assert view.seconds == 27.0 + 13.0 + 12.0


def test_a_fresh_start_counts_from_zero_again(tmp_path: Path) -> None:
    _write_events(tmp_path / "run", [
        {"t": 100.0, "type": "fit_started", "resumed_from": None},
        {"t": 110.0, "type": "epoch_ended", "epoch": 1},
        {"t": 111.0, "type": "fit_ended", "state": "stopped", "seconds": 11.0},
        {"t": 500.0, "type": "fit_started", "resumed_from": None},  # its checkpoint was unreadable: from scratch
        {"t": 504.0, "type": "epoch_ended", "epoch": 1},
    ])
    view = read_run(tmp_path / "run")
    assert [h["elapsed"] for h in view.history] == [4.0] and view.seconds == 4.0


def test_a_run_resumed_within_a_phase_keeps_one_marker_per_phase(tmp_path: Path) -> None:
    """A resumed session announces the phase it continues in again: the same phase, not a second change (it drew
    a second dashed marker and the report listed "From epoch 3: all but…" under "From epoch 2: all but…")."""
    head = {"type": "phase_changed", "label": "head only", "trainable_params": 10, "frozen_params": 90}
    rest = {"type": "phase_changed", "label": "all but the first 3 groups", "trainable_params": 80, "frozen_params": 20}
    _write_events(tmp_path / "run", [
        {"t": 100.0, "type": "fit_started", "resumed_from": None},
        {**head, "t": 101.0, "epoch": 0},
        {"t": 102.0, "type": "batch_ended", "epoch": 0, "pos": 4, "step": 1, "loss": 1.0},
        {"t": 103.0, "type": "epoch_ended", "epoch": 1},
        {**rest, "t": 103.5, "epoch": 1},
        {"t": 104.0, "type": "batch_ended", "epoch": 1, "pos": 4, "step": 2, "loss": 0.9},
        {"t": 105.0, "type": "epoch_ended", "epoch": 2},
        {"t": 106.0, "type": "batch_ended", "epoch": 2, "pos": 4, "step": 3, "loss": 0.8},
        {"t": 107.0, "type": "fit_ended", "state": "stopped", "seconds": 7.0},
        {"t": 200.0, "type": "fit_started", "resumed_from": {"epoch": 2, "pos": 4, "step": 3}},
        {**rest, "t": 201.0, "epoch": 2},  # the phase it continues in, announced again
        {"t": 202.0, "type": "batch_ended", "epoch": 2, "pos": 8, "step": 4, "loss": 0.7},
        {"t": 203.0, "type": "fit_ended", "state": "cancelled", "seconds": 3.0},
        {"t": 300.0, "type": "fit_started", "resumed_from": {"epoch": 3, "pos": 0, "step": 4}},
        {**rest, "t": 301.0, "epoch": 3},  # and again at an epoch's start
    ])
    view = read_run(tmp_path / "run")
    assert [(p["epoch"], p["label"], p["step"]) for p in view.phases] == [
        (0, "head only", 0), (1, "all but the first 3 groups", 1)]


def test_a_single_phase_run_resumed_later_gets_no_phase_marker(tmp_path: Path) -> None:
    _write_events(tmp_path / "run", [
        {"t": 100.0, "type": "fit_started", "resumed_from": None},
        {"t": 101.0, "type": "phase_changed", "epoch": 0, "label": "all layers"},
        {"t": 103.0, "type": "epoch_ended", "epoch": 1},
        {"t": 104.0, "type": "fit_ended", "state": "stopped", "seconds": 4.0},
        {"t": 200.0, "type": "fit_started", "resumed_from": {"epoch": 1, "pos": 0, "step": 1}},
        {"t": 201.0, "type": "phase_changed", "epoch": 1, "label": "all layers"},
    ])
    assert [p["epoch"] for p in read_run(tmp_path / "run").phases] == [0]  # the charts mark phases[1:]


@pytest.fixture(scope="module")
def resumed_mid_phase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gradual run of 3 epochs (6 steps each) stopped in its third epoch, inside its second phase, and resumed
    to the end: the engine announces the phase again when the second session starts."""
    run_dir = _stopped_gradual_run(tmp_path_factory.mktemp("mid_phase"), stop_after=14)
    assert engine.fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    return run_dir


def test_the_phases_of_a_run_resumed_mid_phase_are_listed_once(resumed_mid_phase: Path) -> None:
    from core.report import build_report

    announced = [e["epoch"] for e in runs.read_events(resumed_mid_phase, ("phase_changed",))]
    assert announced == [0, 1, 2]  # what the engine writes: the second session announces its phase again
    view = read_run(resumed_mid_phase)
    assert [(p["epoch"], p["step"]) for p in view.phases] == [(0, 0), (1, 6)]
    assert len(epoch_curves(view.history, "loss", view.phases).layout.shapes) == 1  # one dashed marker
    html = build_report(resumed_mid_phase)
    assert html.count("From epoch") == 2 and "From epoch 3" not in html


def _session(n_train: int = 120, epochs: int = 8) -> dict:
    return {"type": "fit_started", "epochs": epochs, "n_train": n_train}


def _batch(t: float, epoch: int, pos: int, step: int) -> dict:
    return {"t": t, "type": "batch_ended", "epoch": epoch, "pos": pos, "step": step, "loss": 1.0}


def _status(run_dir: Path, **fields) -> None:
    runs.write_status(run_dir, **fields)


def test_a_stop_asked_for_stays_stopping_until_the_run_has_stopped(tmp_path: Path) -> None:
    """The worker's next batch update writes "running" again: the stop asked for still shows (the line went
    back to "Epoch 2 of 8, image 120 of 120" with Stop and Cancel for seconds)."""
    run_dir = tmp_path / "run"
    _write_events(run_dir, [{**_session(), "t": 100.0, "resumed_from": None},
                            _batch(101.0, 1, 112, 22)])
    _status(run_dir, state="running", message="Epoch 2 of 8, image 112 of 120", images_per_second=9.0,
            eta_seconds=80.0)
    runs.request_stop(run_dir)
    view = read_run(run_dir)
    assert view.state == "stopping" and view.active and view.stop_waited(now=view.stop_asked + 3) == 3
    assert view.progress_line() == "Stopping after this batch…"  # no speed, no time left
    runs.append_event(run_dir, _batch(102.0, 1, 120, 23))  # the epoch's last batch: validation comes first
    _status(run_dir, state="running", message="Epoch 2 of 8, image 120 of 120")
    assert read_run(run_dir).progress_line() == "Stopping after epoch 2 of 8 (validating it first)…"
    runs.append_event(run_dir, {"type": "epoch_ended", "epoch": 2})
    assert read_run(run_dir).progress_line() == "Stopping after this batch…"
    message = "Stopped at epoch 3, image 0 of 120; resume to continue."  # the engine's words
    runs.append_event(run_dir, {"type": "fit_ended", "state": "stopped", "seconds": 9.0, "message": message})
    _status(run_dir, state="stopped", message=message)
    runs.clear_stop(run_dir)  # the worker's last act
    view = read_run(run_dir)
    assert view.state == "stopped" and not view.active
    assert view.stopped_line() == "Stopped after epoch 2 of 8; resume to continue."


def test_a_stop_within_an_epoch_keeps_the_runs_words(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    message = "Stopped at epoch 2, image 40 of 120; resume to continue."
    _write_events(run_dir, [{**_session(), "t": 100.0, "resumed_from": None}, _batch(101.0, 1, 40, 18),
                            {"t": 102.0, "type": "fit_ended", "state": "stopped", "message": message}])
    _status(run_dir, state="stopped", message=message)
    assert read_run(run_dir).stopped_line() == message
    _status(run_dir, state="stopped", message="Stopped before it started.")  # a later start, stopped while queued
    assert read_run(run_dir).stopped_line() == "Stopped before it started."


def test_a_stop_on_the_last_epochs_validation_says_the_run_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write_events(run_dir, [{**_session(epochs=2), "t": 100.0, "resumed_from": None}, _batch(101.0, 1, 120, 30)])
    _status(run_dir, state="stopping", message="Stopping after this batch…")
    runs.request_stop(run_dir)
    assert read_run(run_dir).progress_line().startswith("Finishing: epoch 2 of 2 was the last")


def test_a_resumed_run_says_it_is_starting_and_times_only_its_own_batches(tmp_path: Path) -> None:
    """Resumed: the last session's speed and time left kept counting down through the start-up, then the speed
    counted the start-up (3 images/s where it trained 9)."""
    run_dir = tmp_path / "run"
    _write_events(run_dir, [{**_session(), "t": 100.0, "resumed_from": None},
                            *[_batch(100.0 + k, 0, 8 * k, k) for k in range(1, 5)],
                            {"t": 105.0, "type": "fit_ended", "state": "stopped", "seconds": 5.0}])
    _status(run_dir, state="running", message="Starting…", queued_at=500.0, images_per_second=9.0,
            eta_seconds=83.0, progress=0.03)  # what the last session left, as the new worker starts
    view = read_run(run_dir)
    assert view.starting and view.progress_line() == "Starting…"
    runs.append_event(run_dir, {**_session(), "t": 510.0, "resumed_from": {"epoch": 0, "pos": 32, "step": 4}})
    _status(run_dir, message="Resumed training")
    assert not read_run(run_dir).starting and read_run(run_dir).progress_line() == "Resumed training"
    runs.append_event(run_dir, _batch(520.0, 0, 40, 5))  # 10 s of loading before its first batch
    _status(run_dir, message="Epoch 1 of 8, image 40 of 120", images_per_second=0.8, eta_seconds=1150.0)
    assert read_run(run_dir).progress_line(now=520.0) == "Epoch 1 of 8, image 40 of 120"  # no speed yet
    for k in range(1, 6):
        runs.append_event(run_dir, _batch(520.0 + k, 0, 40 + 8 * k, 5 + k))  # 8 images a second from here
    _status(run_dir, message="Epoch 1 of 8, image 80 of 120", images_per_second=3.0, eta_seconds=293.0)
    view = read_run(run_dir)
    assert view.pace is not None and view.pace.images_per_second == 8.0
    assert view.progress_line(now=525.0) == "Epoch 1 of 8, image 80 of 120 · 8 images/s · about 1 min 50 s left"
    assert view.progress_line(now=530.0).endswith("about 1 min 45 s left")  # counts down from the last batch


def test_phase_labels_are_short_lines_on_a_box_and_few_steps_get_whole_ticks() -> None:
    """A long phase label ran over the axis' numbers in one line; a short run's batch chart ticked 1.5, 2.5."""
    label = "all but the first 3 groups, lower LR early"
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in (1, 2)]
    fig = epoch_curves(history, "loss", [{"epoch": 0, "label": "head"}, {"epoch": 1, "label": label}])
    (note,) = fig.layout.annotations
    assert note.text.replace("<br>", " ") == label and "<br>" in note.text and note.bgcolor
    assert batch_loss_figure([1, 2, 3, 4], [1.0, 0.9, 0.8, 0.7]).layout.xaxis.dtick == 1
    assert batch_loss_figure(list(range(1, 200)), [1.0] * 199).layout.xaxis.dtick is None  # plotly's choice


def test_the_speed_and_time_left_are_the_current_phases(tmp_path: Path) -> None:
    """A head-only first epoch ran at 40 images/s, the later ones at 8: the session's average told "43 images/s ·
    about 8 s left", then drifted down epoch after epoch while the time left grew."""
    run_dir = tmp_path / "run"
    events = [{**_session(n_train=40, epochs=3), "t": 100.0, "resumed_from": None},
              {"t": 100.0, "type": "phase_changed", "epoch": 0, "label": "head"}]
    events += [_batch(100.0 + 0.2 * k, 0, 8 * k, k) for k in range(1, 6)]  # 40 images/s
    events += [{"t": 102.0, "type": "epoch_ended", "epoch": 1},
               {"t": 102.0, "type": "phase_changed", "epoch": 1, "label": "all"}]
    events += [_batch(102.0 + k, 1, 8 * k, 5 + k) for k in range(1, 5)]  # 8 images/s
    _write_events(run_dir, events)
    _status(run_dir, state="running", message="Epoch 2 of 3, image 32 of 40")
    pace = read_run(run_dir).pace
    # from epoch 1's last batch (t=101, validation after it counts): 32 images in 5 s, not the session's 11 images/s
    assert pace is not None and pace.images_per_second == 6.4 and pace.eta_seconds == 7.5  # 48 images left
