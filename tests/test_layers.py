"""AppTest of the Layers page's measured cost: a time per epoch under a second is not shown as "0 s"."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.config import FreezeConfig

ROOT = Path(__file__).resolve().parent.parent


def _measured(at: AppTest, seconds_per_step: float) -> None:
    """A measurement of the page's current choices, as the Measure button stores it."""
    freeze = FreezeConfig.from_dict(json.loads(at.session_state["draft_freeze"])).to_dict()
    at.session_state["estimate"] = {"model": "test_resnet", "freeze_config": freeze, "batch_size": 32,
                                    "seconds_per_step": seconds_per_step, "images_per_second": 114.0,
                                    "peak_memory_mb": 512.0, "note": "measured"}


def _epoch(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return next(m.value for m in at.metric if m.label == "Time per epoch")


def test_time_per_epoch_under_a_second_is_not_zero(home: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["draft_backbone"] = "test_resnet"
    at.switch_page("views/layers.py").run()
    at.select_slider(key="estimate_batch").set_value(32)
    at.number_input(key="estimate_images").set_value(32).run()  # one step per epoch
    _measured(at, 0.28)  # 32 images at 114 images/s
    assert _epoch(at.run()) == "< 1 s"
    _measured(at, 2.46)
    assert _epoch(at.run()) == "2.5 s"
    _measured(at, 75.2)
    assert _epoch(at.run()) == "75 s"
