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


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunView]:
    """A gradual run of 3 epochs (6 steps each) stopped where its second phase begins, as Stop pressed between two
    epochs leaves it, read then; and resumed to the end."""
    root = tmp_path_factory.mktemp("resumed")
    data = make_colour_folders(root / "data")  # 24 training photos: 6 batches of 4 per epoch
    cfg = RunConfig("test_efficientnet", str(data), FreezeConfig("gradual"),
                    TrainConfig(epochs=3, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), root / "runs")
    batches: list[BatchEnded] = []

    def count(event) -> None:
        if isinstance(event, BatchEnded):
            batches.append(event)

    assert engine.fit(run_dir, [count, RunRecorder(run_dir)], should_stop=lambda: len(batches) >= 6).state == "stopped"
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
