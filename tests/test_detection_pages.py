"""AppTest for the detection pages: Data (import, report, classes), Test (boxes on an uploaded photo), Runs' Results
tab (mAP, gallery, threshold) and export, Train page shows mAP for a detection run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.recorder import RunRecorder
from core.settings import runs_root
from core.tasks.detection.dataset import resolve
from core.tasks.detection.sample import make_rectangles
from core.tasks.detection.train import fit

ROOT = Path(__file__).resolve().parent.parent


def _app(page: str, **draft) -> AppTest:
    """The app on `page` with the detection task chosen (the router registers the task's pages on its first run,
    so the switch happens after it)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["draft_task"] = "detection"
    for k, v in draft.items():
        at.session_state[f"draft_{k}"] = v
    at.run()
    at.switch_page(page)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture()
def rects(tmp_path: Path) -> Path:
    return make_rectangles(tmp_path / "rects", n=12, size=64, seed=5)


@pytest.fixture()
def trained(home: Path, rects: Path) -> Path:
    manifest = resolve(str(rects))
    manifest["detector"].update(fpn_channels=32, representation=64)
    cfg = RunConfig("test_efficientnet", str(rects), FreezeConfig("all"),
                    TrainConfig(epochs=2, batch_size=4, optimizer="adamw", lr=2e-3, precision="fp32"),
                    task="detection", pretrained=False, name="tiny boxes")
    run_dir = runs.create_run(cfg, manifest, runs_root())
    fit(run_dir, [RunRecorder(run_dir)])
    return run_dir


def test_data_page_imports_a_folder_and_shows_the_report(home: Path, rects: Path) -> None:
    (rects / "images" / "broken.png").write_bytes(b"not a picture")
    coco = json.loads((rects / "annotations.json").read_text())
    coco["images"].append({"id": 999, "file_name": "broken.png", "width": 64, "height": 64})
    (rects / "annotations.json").write_text(json.dumps(coco))
    at = _app("views/detection_data.py").run()
    _ok(at)
    assert any("Import photos" in i.value for i in at.info)
    at.text_input(key="det_folder").set_value(str(rects)).run()
    assert at.session_state["det_add_panel"] is True  # open while the user fills it in (no dataset yet)
    at.button(key="det_folder_import").click().run()
    _ok(at)
    assert at.session_state["det_add_panel"] is False  # and closed once the import is done
    labels = {m.label: m.value for m in at.metric}
    assert labels["Photos"] == "12" and labels["Classes"] == "1"
    assert any("validation photos: the mAP measured on so few" in w.value for w in at.warning)  # 12 photos: 2-3
    from core.tasks.detection.dataset import list_sets

    assert [d.name for d in list_sets()] == ["rects"]  # no name typed: the folder's, as on the other tasks
    assert at.session_state["draft_dataset_id"]
    tables = [d.value for d in at.dataframe]
    assert any("broken.png" in " ".join(map(str, t.get("file", []))) for t in tables)
    at.segmented_control(key="det_section").set_value("Classes and split").run()
    at.text_input(key="det_new_class").set_value("blue <b>box</b>").run()
    at.button(key="det_add_class").click().run()
    _ok(at)
    from core.tasks.detection.dataset import load_set

    assert "blue <b>box</b>" in load_set(at.session_state["draft_dataset_id"]).classes


def test_a_refused_zip_is_named_as_the_user_uploaded_it(home: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes/readme.txt", "no photos here")
    at = _app("views/detection_data.py").run()
    for upload, data in (("holiday boxes.zip", buf.getvalue()), ("torn.zip", b"PK not really a zip")):
        at.file_uploader(key="det_zip").set_value((upload, data, "application/zip")).run()
        at.button(key="det_zip_import").click().run()
        _ok(at)
        shown = "\n".join(e.value for e in at.error).replace("\\", "")
        assert upload in shown and "upload.zip" not in shown and ".extract-" not in shown, shown


def test_data_page_lists_detection_datasets_only(home: Path, rects: Path) -> None:
    from core.tasks.detection.dataset import import_folder, list_sets

    dataset_id, _ = import_folder(rects, "boxes one")
    at = _app("views/detection_data.py").run()
    _ok(at)
    assert at.selectbox(key="det_pick").value == dataset_id
    at.text_input(key="det_new_name").set_value("boxes two").run()
    at.text_input(key="det_folder").set_value(str(rects)).run()
    at.button(key="det_folder_import").click().run()  # a second import: the new set is shown, not the one before
    _ok(at)
    second = next(d.id for d in list_sets() if d.name == "boxes two")
    assert at.selectbox(key="det_pick").value == second and at.session_state["draft_dataset_id"] == second
    assert at.text_input(key="det_new_name").value == "" and at.text_input(key="det_folder").value == ""
    at2 = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at2.switch_page("views/data.py").run()
    _ok(at2)
    assert "boxes one" not in " ".join(str(s.options) for s in at2.selectbox)


def test_test_page_draws_boxes_on_an_uploaded_photo(trained: Path, rects: Path) -> None:
    at = _app("views/detection_test.py", run_id=trained.name).run()
    _ok(at)
    png = (rects / "images" / "img_000.png").read_bytes()
    at.file_uploader(key="dtest_files").set_value([("shape.png", png, "image/png"),
                                                    ("broken.jpg", b"nope", "image/jpeg")]).run()
    _ok(at)
    assert any("ms for this photo" in c.value for c in at.caption)
    assert any("cannot be read" in e.value and "broken" in e.value for e in at.error)
    at.slider(key="dtest_threshold").set_value(0.05).run()
    _ok(at)


def test_runs_results_tab_and_export(trained: Path) -> None:
    at = _app("views/runs.py", run_id=trained.name).run()
    _ok(at)
    at.button(key="det_results_evaluate").click().run()
    _ok(at)
    assert (trained / "evaluation.json").exists()
    labels = [m.label for m in at.metric]
    assert "mAP@0.5 (validation)" in labels and "mAP@0.5:0.95 (validation)" in labels
    assert any("found" in c.value for c in at.caption)
    at.slider(key="det_results_threshold").set_value(0.9).run()
    _ok(at)
    assert at.radio(key="runs_export_fmt").options == ["safetensors", "onnx"]  # no TorchScript: it always failed
    at.button(key="runs_export").click().run()
    _ok(at)
    manifest = json.loads((trained / "exports" / "model" / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["classes"] == ["red"]
    assert any("checked" in s.value for s in at.success)


def test_train_page_shows_the_detection_run(trained: Path) -> None:
    at = _app("views/train.py", run_id=trained.name, backbone="test_efficientnet", dataset_id=str(trained)).run()
    _ok(at)
    best = next(m for m in at.metric if m.label == "Best mAP@0.5")
    assert "%" not in best.value and float(best.value) == pytest.approx(runs.read_status(trained)["best_val_accuracy"],
                                                                        abs=5e-4)  # as the Results tab writes it


def test_train_page_starts_a_run_with_the_tasks_learning_rate(home: Path, rects: Path) -> None:
    """The detection defaults' SGD 0.01 reaches a run started from the page (it used to fall back to the generic
    SGD default, 0.01 × batch / 32), and the terminal's train config agrees."""
    import argparse

    from core import jobs
    from core.tasks.detection import DETECTION
    from core.tasks.detection.cli import train_config

    at = _app("views/train.py", backbone="test_efficientnet", dataset_id=str(rects)).run()
    _ok(at)
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    _ok(at)
    run_dir = runs_root() / at.session_state["draft_run_id"]
    jobs.cancel(run_dir)
    expected = DETECTION.default_train().lr
    assert expected is not None and runs.load_config(run_dir).train.lr == expected
    assert train_config(argparse.Namespace(epochs=None, seed=0)).lr == expected


def test_layers_page_shows_the_detector_groups(home: Path) -> None:
    at = _app("views/detection_layers.py", backbone="test_efficientnet").run()
    _ok(at)
    table = at.dataframe[0].value
    assert list(table["group"])[0] == "stem" and list(table["group"])[-1] == "head"
    head = table[table["group"] == "head"].iloc[0]
    assert head["params"] > 10_000 and bool(head["trains"])  # FPN + heads, not a linear classifier
    at.radio(key="det_freeze_preset").set_value("last-N").run()
    at.slider(key="det_freeze_last_n").set_value(2).run()
    _ok(at)
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "last-2"
    assert sum(bool(v) for v in at.dataframe[0].value["trains"]) == 3


def test_the_photo_picker_counts_boxes_and_keeps_the_photo_after_a_change(home: Path, rects: Path) -> None:
    from core.tasks.detection.dataset import import_folder

    import_folder(rects, "boxes")
    at = _app("views/detection_data.py").run()
    at.segmented_control(key="det_section").set_value("Draw boxes").run()
    _ok(at)
    assert not at.get("camera_input")  # no camera box (and no browser prompt) until the user asks for it
    at.toggle(key="det_camera_on").set_value(True).run()
    assert at.get("camera_input")
    picker = next(s for s in at.selectbox if s.label == "Photo")
    assert " — 1 box (" in picker.options[1] and " — 2 boxes (" in picker.options[0]  # not "1 boxes"
    assert not any("1 boxes" in o for o in picker.options)
    third = picker.options[2]
    key = picker.key
    at.selectbox(key=key).select_index(2).run()
    chosen = at.session_state["det_image"]
    at.button(key="det_clear_boxes").click().run()  # the photo becomes a negative
    _ok(at)
    picker = next(s for s in at.selectbox if s.label == "Photo")
    assert picker.key != key  # drawn anew, so the closed box shows the new count
    assert at.session_state["det_image"] == chosen and picker.value == chosen
    assert third.split(" — ")[0] + " — 0 boxes (" in picker.options[2]


def test_model_page_describes_the_preprocessing_of_the_task(home: Path) -> None:
    at = _app("views/model.py").run()
    _ok(at)
    captions = " ".join(c.value for c in at.caption)
    assert "Colour normalisation" in captions and "centre crop" not in captions  # detection keeps whole photos
    at.session_state["draft_task"] = "classification"
    at.run()
    assert "centre crop 0.875" in " ".join(c.value for c in at.caption)
