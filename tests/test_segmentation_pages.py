"""AppTest for the segmentation pages: Data (import, report, class table, resize, paint), Layers (architecture and
freeze), Train (the architecture reaches the run), Results and Test."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import runs
from core.settings import runs_root
from core.tasks.segmentation import data as segdata
from tests.test_segmentation_core import make_set

ROOT = Path(__file__).resolve().parent.parent


def _app(**draft) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["draft_task"] = "segmentation"
    for k, v in draft.items():
        at.session_state[f"draft_{k}"] = v
    return at.run()  # the router registers the task's pages on its first run


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
    parts += [e.value for e in at.error] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def test_data_page_shows_the_report_and_fixes_mask_sizes(home: Path, tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", n_train=6, n_val=2)
    Image.new("L", (32, 32), 1).save(root / "train" / "masks" / "train00.png")  # a mask of the wrong size
    dataset_id, _ = segdata.import_folder(root, "shapes <b>test</b>")
    at = _app(dataset_id=dataset_id)
    at.switch_page("views/segmentation_data.py").run()
    assert not at.exception
    assert at.session_state["draft_dataset_id"] == dataset_id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training"] == "5" and metrics["Problems"] == "1"
    assert any("train00" in c.value and "32×32" in c.value for c in at.caption)  # (escaped markdown)
    assert len(at.get("plotly_chart")) >= 2
    at.button(key="seg_data_resize").click().run()
    assert not at.exception
    codes = segdata.read_stored_codes(dataset_id, store_file(dataset_id, "train00.jpg"))
    assert codes.shape == (64, 64) and set(np.unique(codes)) == {1}
    at.run()
    assert {m.label: m.value for m in at.metric}["Problems"] == "0"


def store_file(dataset_id: str, suffix: str) -> str:
    from core.data.store import load_dataset

    return next(it.file for it in load_dataset(dataset_id).items if it.original_name.endswith(suffix))


def test_class_table_rename_and_painting_fallback(home: Path, tmp_path: Path) -> None:
    dataset_id, _ = segdata.import_folder(make_set(tmp_path / "ds", n_train=4, n_val=2), "shapes")
    at = _app(dataset_id=dataset_id)
    at.switch_page("views/segmentation_data.py").run()
    assert not at.exception
    at.text_input(key="seg_data_new_class").input("puddle").run()
    at.button(key="seg_data_add_class").click().run()
    assert not at.exception
    assert "puddle" in segdata.stored_pairs(dataset_id)[1].names
    if True:  # the brush needs a real browser (see the e2e test); rectangles are checked here
        at.radio(key="seg_paint_mode").set_value("Fill a rectangle").run()
        at.radio(key="seg_paint_tool").set_value("puddle").run()
        at.number_input(key="seg_paint_x1").set_value(10).run()
        at.number_input(key="seg_paint_y1").set_value(10).run()
        at.button(key="seg_paint_fill").click().run()
        assert not at.exception
        file = at.selectbox(key="seg_paint_image").value
        table = segdata.stored_pairs(dataset_id)[1]
        codes = segdata.read_stored_codes(dataset_id, file)
        assert (codes[:10, :10] == table.codes[table.names.index("puddle")]).all()


def test_sample_layers_train_results_and_test(home: Path) -> None:
    at = _app(backbone="test_efficientnet")
    at.switch_page("views/segmentation_data.py").run()
    at.button(key="seg_data_sample").click().run()
    assert not at.exception
    dataset_id = at.session_state["draft_dataset_id"]
    assert dataset_id and segdata.stored_pairs(dataset_id)[1].names == ("background", "circle", "square", "triangle")
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "all"

    at.switch_page("views/segmentation_layers.py").run()
    assert not at.exception
    at.radio(key="seg_layers_arch").set_value("fpn").run()
    assert at.session_state["draft_segmentation_options"] == {"arch": "fpn"}
    groups = at.dataframe[-1].value
    assert list(groups["group"])[-1] == "decoder" and "encoder 1/32" in list(groups["group"])
    at.radio(key="seg_freeze_preset").set_value("head").run()
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "head"

    at.switch_page("views/train.py").run()
    assert not at.exception
    at.number_input(key="train_epochs").set_value(1).run()
    from core.tasks.segmentation import TASK
    from core.tasks.segmentation.train import DEFAULT_CROP

    crop = at.select_slider(key="train_crop")
    assert TASK.full_crop == DEFAULT_CROP and crop.value == (TASK.default_train().train_size or DEFAULT_CROP)
    crop.set_value(192).run()
    assert at.checkbox(key="train_class_weights").value is TASK.default_train().class_weights is True
    at.button(key="train_start").click().run()
    assert not at.exception
    run_dir = runs_root() / at.session_state["draft_run_id"]
    assert runs.load_dataset(run_dir)["model"]["arch"] == "fpn"
    assert runs.load_config(run_dir).train.train_size == 192  # the crop chosen on the page reaches the run
    assert runs.load_config(run_dir).train.class_weights  # the measured default, ticked on the page
    end = time.time() + 400
    while time.time() < end and runs.read_status(run_dir).get("state") not in ("completed", "failed", "crashed"):
        time.sleep(1)
    assert runs.read_status(run_dir).get("state") == "completed", runs.read_status(run_dir)

    at.switch_page("views/runs.py").run()
    assert not at.exception
    at.button(key="seg_results_evaluate").click().run()
    assert not at.exception
    assert {m.label for m in at.metric} >= {"mIoU", "Pixel accuracy"}

    at.switch_page("views/segmentation_test.py").run()
    assert not at.exception
    assert at.selectbox(key="seg_test_run").value == run_dir.name
