"""The live progress line of the Train page (core.progress)."""

from __future__ import annotations

from pathlib import Path

from core.progress import RunView


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
