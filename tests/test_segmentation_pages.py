"""AppTest for the segmentation pages: Data (import, report, class table, resize, paint), Layers (architecture and
freeze), Train (the architecture reaches the run), Results and Test."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
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


RECT_KEYS = ("seg_paint_x0", "seg_paint_y0", "seg_paint_x1", "seg_paint_y1")


def _paint_page(home: Path, tmp_path: Path) -> tuple[AppTest, str]:
    dataset_id, _ = segdata.import_folder(make_set(tmp_path / "ds", n_train=4, n_val=2), "shapes")
    at = _app(dataset_id=dataset_id)
    at.switch_page("views/segmentation_data.py").run()
    assert not at.exception
    return at, dataset_id


def _canvas(at: AppTest):
    """The brush canvas (streamlit-drawable-canvas), found by its key."""
    found = [e for e in at.get("bidi_component") if str(e.key).startswith("seg_paint_canvas_")]
    assert len(found) == 1, [e.key for e in at.get("bidi_component")]
    return found[0]


def _strokes(table: segdata.ClassTable, regions: list[tuple[str, tuple[int, int, int, int]]], side: int = 64) -> dict:
    """What the canvas sends after strokes in the browser: the Fabric objects and the RGBA drawing (class colours on
    transparent), for regions (class name, (top, bottom, left, right)) of a side × side canvas."""
    rgba = np.zeros((side, side, 4), dtype=np.uint8)
    objects = []
    for name, (y0, y1, x0, x1) in regions:
        colour = table.colours[table.names.index(name)]
        rgba[y0:y1, x0:x1] = (*colour, 255)
        objects.append({"type": "Path", "stroke": "#{:02x}{:02x}{:02x}".format(*colour), "strokeWidth": 16})
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"drawing": {"raw": {"objects": objects, "background": ""}, "data": url}, "backgroundFit": None}


def _has_button(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)


def test_brush_strokes_of_several_classes_survive_class_and_tool_changes_and_save_once(home: Path,
                                                                                         tmp_path: Path) -> None:
    at, dataset_id = _paint_page(home, tmp_path)
    table = segdata.stored_pairs(dataset_id)[1]
    file = at.selectbox(key="seg_paint_image").value
    before = segdata.read_stored_codes(dataset_id, file).copy()
    assert at.radio(key="seg_paint_mode").value == "Brush"
    assert not _has_button(at, "seg_paint_save")  # nothing drawn yet
    at.radio(key="seg_paint_tool").set_value("disc").run()
    key = _canvas(at).key
    at.session_state[key] = _strokes(table, [("disc", (2, 10, 2, 20))])  # a stroke in the disc colour
    at.run()
    assert not at.exception and _has_button(at, "seg_paint_save")

    # another class: the same canvas, its strokes kept (only the stroke colour changes)
    at.radio(key="seg_paint_tool").set_value("square").run()
    assert not at.exception and _canvas(at).key == key and _has_button(at, "seg_paint_save")
    assert len(at.session_state[key]["drawing"]["raw"]["objects"]) == 1
    at.session_state[key] = _strokes(table, [("disc", (2, 10, 2, 20)), ("square", (40, 50, 30, 60))])
    at.run()

    # the rectangle tool and back: the strokes are kept meanwhile and given back to the canvas
    at.radio(key="seg_paint_mode").set_value("Fill a rectangle").run()
    assert not at.exception and any("unsaved brush strokes" in i.value for i in at.info)
    at.radio(key="seg_paint_mode").set_value("Brush").run()
    assert not at.exception and _canvas(at).key == key and _has_button(at, "seg_paint_save")
    assert len(at.session_state[key]["drawing"]["raw"]["objects"]) == 2

    # one save writes both classes and is confirmed after the rerun; the canvas starts clean from the saved mask
    at.button(key="seg_paint_save").click().run()
    assert not at.exception
    assert any("Mask saved" in s.value for s in at.success)
    codes = segdata.read_stored_codes(dataset_id, file)
    disc, square = (table.codes[table.names.index(n)] for n in ("disc", "square"))
    assert (codes[2:10, 2:20] == disc).all() and (codes[40:50, 30:60] == square).all()
    untouched = np.ones_like(codes, dtype=bool)
    untouched[2:10, 2:20] = untouched[40:50, 30:60] = False
    assert (codes[untouched] == before[untouched]).all()
    assert _canvas(at).key != key and not _has_button(at, "seg_paint_save")
    assert not at.session_state["seg_paint_pending"]
    at.run()  # e.g. the new canvas reports its size: the confirmation stays
    assert any("Mask saved" in s.value for s in at.success)
    at.session_state[_canvas(at).key] = _strokes(table, [("disc", (30, 34, 0, 64))])
    at.run()  # the next stroke: the confirmation has done its job
    assert not any("Mask saved" in s.value for s in at.success) and _has_button(at, "seg_paint_save")


def test_discarding_strokes_gives_an_empty_canvas(home: Path, tmp_path: Path) -> None:
    at, dataset_id = _paint_page(home, tmp_path)
    table = segdata.stored_pairs(dataset_id)[1]
    file = at.selectbox(key="seg_paint_image").value
    before = segdata.read_stored_codes(dataset_id, file).copy()
    key = _canvas(at).key
    at.session_state[key] = _strokes(table, [("square", (0, 64, 0, 64))])
    at.run()
    at.button(key="seg_paint_discard").click().run()
    assert not at.exception and _canvas(at).key != key and not _has_button(at, "seg_paint_save")
    assert (segdata.read_stored_codes(dataset_id, file) == before).all()


def test_rectangle_fill_defaults_to_a_centred_quarter_and_confirms(home: Path, tmp_path: Path) -> None:
    at, dataset_id = _paint_page(home, tmp_path)
    at.text_input(key="seg_data_new_class").input("puddle").run()
    at.button(key="seg_data_add_class").click().run()
    assert not at.exception
    table = segdata.stored_pairs(dataset_id)[1]
    assert "puddle" in table.names
    puddle = table.codes[table.names.index("puddle")]
    file = at.selectbox(key="seg_paint_image").value
    before = segdata.read_stored_codes(dataset_id, file).copy()
    at.radio(key="seg_paint_mode").set_value("Fill a rectangle").run()
    at.radio(key="seg_paint_tool").set_value("puddle").run()
    assert [at.number_input(key=k).value for k in RECT_KEYS] == [16, 16, 48, 48]  # never the whole 64 × 64 image
    assert any("32 × 32 pixels (25% of the image) become **puddle**" in c.value for c in at.caption)
    at.button(key="seg_paint_fill").click().run()
    assert not at.exception
    assert any("Mask saved" in s.value and "32 × 32" in s.value for s in at.success)  # seen after the rerun
    at.run()
    assert any("Mask saved" in s.value for s in at.success)  # until the rectangle, class or photo changes
    codes = segdata.read_stored_codes(dataset_id, file)
    inside = np.zeros_like(codes, dtype=bool)
    inside[16:48, 16:48] = True
    assert (codes[inside] == puddle).all() and (codes[~inside] == before[~inside]).all()

    # a chosen rectangle; an empty one cannot be filled
    for k, v in zip(RECT_KEYS, (0, 0, 10, 10), strict=True):
        at.number_input(key=k).set_value(v)
    at.run()
    assert not any("Mask saved" in s.value for s in at.success)
    at.button(key="seg_paint_fill").click().run()
    assert (segdata.read_stored_codes(dataset_id, file)[:10, :10] == puddle).all()
    at.number_input(key="seg_paint_x0").set_value(20).run()  # left of 20, right of 10
    assert at.button(key="seg_paint_fill").disabled and any("larger than" in w.value for w in at.warning)


def test_class_table_save_is_confirmed_after_the_rerun(home: Path, tmp_path: Path) -> None:
    at, dataset_id = _paint_page(home, tmp_path)
    at.button(key="seg_data_save_classes").click().run()
    assert not at.exception and any(s.value == "Classes saved." for s in at.success)


def test_the_not_labelled_value_is_a_plain_choice(home: Path, tmp_path: Path) -> None:
    root = make_set(tmp_path / "street", n_train=4, n_val=2, void=True)  # value 9 marks unlabelled pixels
    (root / "classes.txt").unlink()  # no class named 'void': only the user knows what 9 means
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root.parent).as_posix())
    at = _app()
    at.switch_page("views/segmentation_data.py").run()
    at.file_uploader(key="seg_data_zip").set_value(("street.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert at.checkbox(key="seg_data_has_void").value is False
    assert not any(n.key == "seg_data_ignore" for n in at.number_input)  # no "-1 means none" to decode
    assert any("still counts as 'not labelled'" in c.value for c in at.caption)
    at.checkbox(key="seg_data_has_void").check().run()
    assert at.number_input(key="seg_data_ignore").value == 255
    at.number_input(key="seg_data_ignore").set_value(9).run()
    at.button(key="seg_data_import_zip").click().run()
    assert not at.exception
    table = segdata.stored_pairs(at.session_state["draft_dataset_id"])[1]
    assert table.ignore == 9 and len(table.names) == 3, table


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
