"""AppTest of the Results view: classes without validation photos are named, and the "not sure" threshold is only
applied when the user chooses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.evaluate import evaluate_run
from core.inference import Predictor
from core.settings import runs_root
from core.tasks import get_task
from tests.synthetic import make_colour_folders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def evaluated(home: Path, tmp_path: Path) -> Path:
    """An evaluated run whose class 'blue' has training photos but no validation photos."""
    data = make_colour_folders(tmp_path / "data", train=4, val=3)
    shutil.rmtree(data / "val" / "blue")
    cfg = RunConfig("test_convnext", str(data), FreezeConfig("head"),
                    TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), runs_root())
    classes = runs.load_dataset(run_dir)["classes"]
    torch.manual_seed(0)
    net = get_task("classification").build_model("test_convnext", len(classes), pretrained=False)
    runs.save_weights(run_dir, net.state_dict(), {"epoch": 1, "val_accuracy": 0.5})
    evaluate_run(run_dir, with_learning_curve=False)
    return run_dir


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_results_name_the_unchecked_class_and_apply_the_threshold_only_on_request(evaluated: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.switch_page("views/runs.py").run()
    _ok(at)
    warning = next(w.value for w in at.warning if "blue" in w.value)
    assert "has no validation photos, so it was not checked" in warning and "over the 2 classes" in warning
    status = " ".join(md.value for md in at.markdown)
    assert "**Not in use:** the model always answers" in status
    assert Predictor.from_run(evaluated).threshold is None
    at.slider(key="res_threshold").set_value(0.5)
    at.button(key="res_threshold_set").click().run()
    _ok(at)
    assert any("below 50%" in s.value for s in at.success)
    assert any("**In use:** answers below 50%" in md.value for md in at.markdown)
    assert not any("Suggested only" in c.value for c in at.caption)  # the note under the chart follows the choice
    assert any(c.value.replace("\\", "") == "Set by you." for c in at.caption), [c.value for c in at.caption]
    assert Predictor.from_run(evaluated).threshold == pytest.approx(0.5)
    at.button(key="res_threshold_clear").click().run()
    _ok(at)
    assert Predictor.from_run(evaluated).threshold is None


def test_the_threshold_status_says_what_is_applied() -> None:
    from views.results import threshold_status

    suggested = {"threshold": None, "suggested": 0.61, "chosen_by": None}
    assert threshold_status(suggested).startswith("**Not in use:**") and "Suggested: **61%**" in threshold_status(
        suggested)
    chosen = {"threshold": 0.61, "suggested": 0.61, "chosen_by": "user"}
    assert threshold_status(chosen).startswith("**In use:** answers below 61%")
    assert threshold_status(chosen, stale=True).startswith("**Not applied:**")
    assert "you chose to always answer" in threshold_status({"threshold": None, "suggested": 0.61,
                                                             "chosen_by": "user"})
