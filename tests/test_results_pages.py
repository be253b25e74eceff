"""AppTest for the Runs (results, export, manage) and Test pages, on a tiny trained run."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import engine, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.settings import runs_root
from tests.synthetic import COLOURS, make_colour_folders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def trained(home: Path, tmp_path: Path) -> Path:
    data = make_colour_folders(tmp_path / "data", train=6, val=3)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("all"),
                    TrainConfig(epochs=2, batch_size=6, precision="fp32", device="cpu"), pretrained=False,
                    name="tiny colours")
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), runs_root())
    engine.fit(run_dir)
    return run_dir


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.switch_page(page)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _png(colour: str) -> bytes:
    img = np.full((48, 48, 3), COLOURS[colour], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_runs_page_without_runs_points_to_training(home: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    assert any("No runs yet" in i.value for i in at.info)


def test_results_export_and_rename(trained: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    at.button(key="runs_evaluate").click().run()
    _ok(at)
    assert (trained / "evaluation.json").exists()
    labels = [m.label for m in at.metric]
    assert "Accuracy (val)" in labels and "Macro F1 (val)" in labels
    at.button(key="runs_export").click().run()
    _ok(at)
    manifest = json.loads((trained / "exports" / "model" / "manifest.json").read_text())
    assert manifest["classes"] == ["blue", "green", "red"]
    assert any("checked" in s.value for s in at.success)
    at.text_input(key="runs_name").set_value("renamed run").run()
    at.button(key="runs_save_meta").click().run()
    _ok(at)
    assert json.loads((trained / "meta.json").read_text())["name"] == "renamed run"


def test_two_runs_with_the_same_name_compare_side_by_side(trained: Path) -> None:
    twin = trained.parent / runs.new_run_id()
    shutil.copytree(trained, twin)  # the same name ("tiny colours"), as two runs of one recipe have
    at = _app("views/runs.py").run()
    _ok(at)
    at.multiselect(key="runs_compare").set_value([trained.name, twin.name]).run()
    _ok(at)  # used to fail: duplicate column names
    labels = [f"tiny colours ({trained.name})", f"tiny colours ({twin.name})"]
    side = next(d.value for d in at.dataframe if sorted(d.value.columns) == sorted(labels))  # a column per run
    assert side.loc["lr"].tolist() == ["auto", "auto"] and side.loc["epochs"].tolist() == ["2", "2"]


def test_test_page_predicts_uploaded_photos_and_reports_bad_files(trained: Path) -> None:
    at = _app("views/test.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()
    _ok(at)
    at.toggle(key="test_gradcam").set_value(False)
    at.file_uploader(key="test_files").set_value([("red.png", _png("red"), "image/png"),
                                                  ("broken.jpg", b"not an image", "image/jpeg")]).run()
    _ok(at)
    assert any("ms for this photo" in c.value for c in at.caption)
    assert any("broken.jpg" in e.value or "cannot be read" in e.value for e in at.error)


def test_report_button_writes_a_self_contained_report(trained: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    at.button(key="runs_report").click().run()
    _ok(at)
    html = (trained / "report.html").read_text()
    assert "<html" in html.lower() and "https://" not in html
    assert any(b.label == "Download report.html" for b in at.get("download_button"))
