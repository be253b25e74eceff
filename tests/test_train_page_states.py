"""AppTest: the Train page's live view and the Home page's Train step as a run stops, resumes or is cancelled. The
run folders are faked (status, events, STOP file) without a worker, so the states can be set one by one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from tests.synthetic import make_colour_folders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def run(home: Path, tmp_path: Path) -> tuple[str, Path]:
    """A run of 8 epochs on 120 training photos (as far as its events say), made but never started."""
    colours = str(make_colour_folders(tmp_path / "colours", train=4, val=2))
    run_dir = runs.create_run(RunConfig("test_resnet", colours, FreezeConfig("all"), TrainConfig(epochs=8),
                                        pretrained=False, name="eight epochs"), trainset.resolve(colours))
    return colours, run_dir


def _events(run_dir: Path, events: list[dict]) -> None:
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(e) + "\n" for e in events))


def _trained_two_epochs(run_dir: Path, t: float) -> None:
    """Events of a session that trained 2 epochs and the last batch of its third, 8 images a second."""
    _events(run_dir, [{"t": t, "type": "fit_started", "epochs": 8, "n_train": 120, "resumed_from": None}]
            + [{"t": t + 1 + k, "type": "batch_ended", "epoch": k // 15, "pos": 8 * (k % 15 + 1), "step": k + 1,
                "loss": 1.0} for k in range(30)]
            + [{"t": t + 16, "type": "epoch_ended", "epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5,
                "val_loss": 1.0, "val_accuracy": 0.5, "lr": 0.01, "seconds": 15.0},
               {"t": t + 31, "type": "epoch_ended", "epoch": 2, "train_loss": 0.9, "train_accuracy": 0.6,
                "val_loss": 0.9, "val_accuracy": 0.6, "lr": 0.01, "seconds": 15.0}])


def _train_page(colours: str, run_dir: Path) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["draft_backbone"] = "test_resnet"
    at.session_state["draft_dataset_id"] = colours
    at.session_state["draft_run_id"] = run_dir.name
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _keys(at: AppTest) -> dict[str, bool]:
    """The buttons shown, by key: whether each can be pressed."""
    return {b.key: not b.disabled for b in at.button if b.key}


def _progress_text(at: AppTest) -> str:
    bars = at.get("progress")
    assert len(bars) == 1
    return bars[0].proto.text


def test_a_stop_asked_for_shows_as_stopping_until_the_run_has_stopped(run: tuple[str, Path]) -> None:
    colours, run_dir = run
    t = time.time() - 60
    _trained_two_epochs(run_dir, t)
    _events(run_dir, [{"t": t + 32, "type": "batch_ended", "epoch": 2, "pos": 8, "step": 31, "loss": 1.0}])
    runs.write_status(run_dir, state="running", message="Epoch 3 of 8, image 8 of 120", progress=0.26,
                      images_per_second=8.0, eta_seconds=90.0)
    at = _train_page(colours, run_dir)
    assert _keys(at)["train_stop"] and _keys(at)["train_cancel"]
    at.button(key="train_stop").click().run()  # the click's own run shows it: the state is read after the stop
    assert not at.exception
    assert runs.stop_requested(run_dir) and _progress_text(at) == "Stopping after this batch…"
    assert _keys(at) | {"train_stopping": False} == _keys(at)  # shown, and cannot be pressed
    assert "train_stop" not in _keys(at) and "train_cancel" not in _keys(at)
    # the worker's next batch update writes "running" again (the page went back to Stop and Cancel for seconds)
    _events(run_dir, [{"t": t + 33, "type": "batch_ended", "epoch": 2, "pos": 16, "step": 32, "loss": 1.0}])
    runs.write_status(run_dir, state="running", message="Epoch 3 of 8, image 16 of 120")
    at.run()
    assert _progress_text(at) == "Stopping after this batch…"
    assert "train_stop" not in _keys(at) and "train_cancel" not in _keys(at)
    message = "Stopped at epoch 3, image 16 of 120; resume to continue."
    _events(run_dir, [{"t": t + 34, "type": "fit_ended", "state": "stopped", "seconds": 34.0, "message": message}])
    runs.write_status(run_dir, state="stopped", message=message)
    runs.clear_stop(run_dir)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    at.run()
    assert any(w.value == message for w in at.warning)
    assert set(_keys(at)) & {"train_stop", "train_cancel", "train_stopping"} == set()
    assert at.button(key="train_resume").label == "Resume"


def test_a_stop_that_takes_long_offers_cancel_again(run: tuple[str, Path]) -> None:
    colours, run_dir = run
    _trained_two_epochs(run_dir, time.time() - 60)
    runs.write_status(run_dir, state="stopping", message="Stopping after this batch…")
    (run_dir / "STOP").write_text(str(time.time() - 5))
    at = _train_page(colours, run_dir)
    assert "train_cancel" not in _keys(at) and not _keys(at)["train_stopping"]
    (run_dir / "STOP").write_text(str(time.time() - 60))  # e.g. a long validation before it can save
    at.run()
    assert _keys(at)["train_cancel"] and not _keys(at)["train_stopping"]


def test_a_stop_between_two_epochs_says_after_which(run: tuple[str, Path]) -> None:
    colours, run_dir = run
    t = time.time() - 60
    _trained_two_epochs(run_dir, t)
    message = "Stopped at epoch 3, image 0 of 120; resume to continue."  # the engine's words
    _events(run_dir, [{"t": t + 32, "type": "fit_ended", "state": "stopped", "seconds": 32.0, "message": message}])
    runs.write_status(run_dir, state="stopped", message=message, epochs=8, epochs_done=2)
    at = _train_page(colours, run_dir)
    assert [w.value for w in at.warning] == ["Stopped after epoch 2 of 8; resume to continue."]


def test_a_resumed_run_says_it_is_starting_without_the_last_sessions_time_left(run: tuple[str, Path]) -> None:
    colours, run_dir = run
    t = time.time() - 300
    _trained_two_epochs(run_dir, t)
    _events(run_dir, [{"t": t + 32, "type": "fit_ended", "state": "stopped", "seconds": 32.0, "message": "Stopped"}])
    # Resume pressed: the new worker is loading; the status still holds the last session's speed and time left
    runs.write_status(run_dir, state="running", message="Starting…", queued_at=time.time() - 3, progress=0.25,
                      images_per_second=9.0, eta_seconds=83.0)
    at = _train_page(colours, run_dir)
    assert _progress_text(at) == "Starting…"
    assert _keys(at)["train_stop"] and _keys(at)["train_cancel"]  # it can be stopped while it starts


def test_home_says_where_a_cancelled_or_stopped_run_is(run: tuple[str, Path]) -> None:
    _, run_dir = run

    def train_step() -> str:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["draft_run_id"] = run_dir.name
        at.run()
        assert not at.exception
        links = [link.proto.label for link in at.get("page_link")]
        return links[3]  # 1 Model, 2 Data, 3 Layers, 4 Train

    runs.write_status(run_dir, state="cancelled", message="Cancelled.", epochs=5, epochs_done=2)
    assert train_step() == "cancelled after epoch 2 of 5 — start again"
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    assert train_step() == "cancelled after epoch 2 of 5 — resume or start again"
    runs.write_status(run_dir, state="stopped", message="Stopped at epoch 3, image 40 of 120")
    assert train_step() == "stopped after epoch 2 of 5 — resume or start again"
    runs.write_status(run_dir, state="failed", message="Training failed: boom")
    assert train_step() == "failed — see why"
    runs.write_status(run_dir, state="running", message="Epoch 3 of 5")
    assert train_step() == "training epoch 3 of 5 — watch it"
    runs.request_stop(run_dir)
    assert train_step() == "stopping — see the run"
    runs.clear_stop(run_dir)
    runs.write_status(run_dir, state="completed", message="Finished 5 epochs", epochs_done=5)
    assert train_step() == "done ✓ — see the run"
