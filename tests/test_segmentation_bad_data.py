"""Segmentation data a user gets wrong: an empty mask file, a colour that is no class, a mask of the wrong size. Each
is named once, by file, with a reason in plain words; and the Data page shows the dataset just imported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.tasks.segmentation import data
from tests.test_segmentation_core import make_set

ROOT = Path(__file__).resolve().parent.parent


def _problems(dataset_id: str) -> list[data.Problem]:
    return data.stored_report(dataset_id).problems


def test_an_empty_mask_file_is_named_once_as_empty(home: Path, tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", n_train=4, n_val=2)
    (root / "train" / "masks" / "train00.png").write_bytes(b"")
    dataset_id, _ = data.import_folder(root, "empty mask")
    about = [p for p in _problems(dataset_id) if p.file.endswith("train00.jpg")]
    assert len(about) == 1, [p.message for p in about]  # not also 'no mask with the same name'
    assert "empty (0 bytes)" in about[0].message and "its mask not" not in about[0].message


def test_a_mask_that_is_no_image_says_so_in_a_sentence(tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", n_train=3, n_val=1)
    (root / "train" / "masks" / "train00.png").write_bytes(b"this is text, not a picture")
    manifest = data.resolve_folder(root)
    message = next(p["message"] for p in manifest["report"]["problems"] if p["kind"] == "unreadable_mask")
    assert "train00.jpg: the mask is not a lossless image" in message, message


def test_a_colour_that_is_no_class_is_reported_not_silently_voided(home: Path, tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", n_train=4, n_val=2, colour=True)
    (root / "classes.txt").write_text("0 0 0 void\n200 30 30 disc\n30 200 30 square\n")
    mask = root / "train" / "masks" / "train01.png"
    rgb = np.asarray(Image.open(mask).convert("RGB")).copy()
    rgb[:5, :5] = (255, 0, 255)  # a colour classes.txt does not know
    Image.fromarray(rgb).save(mask)
    dataset_id, report = data.import_folder(root, "colours")
    stray = [p for p in report.problems if p.file.endswith("train01.jpg")]
    assert len(stray) == 1 and stray[0].kind == "unknown_values"
    assert "rgb(255, 0, 255)" in stray[0].message and "25 pixels" in stray[0].message
    assert "255," not in stray[0].message.split("rgb(255, 0, 255)")[0]  # not the stored value 255
    assert any("colour 0,0,0" in n for n in data.read_side(dataset_id)["notes"])  # not 'value 0'


def test_data_page_shows_the_dataset_just_imported(home: Path, tmp_path: Path) -> None:
    """A second import of a folder named like the first: the picker moves to the new set (it stayed on the old one,
    under the same name, with the old report), and the name is the dropped folder's."""
    first, _ = data.import_folder(make_set(tmp_path / "a", n_train=3, n_val=1), "street")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["draft_task"] = "segmentation"
    at.session_state["draft_dataset_id"] = first
    at.run()
    at.switch_page("views/segmentation_data.py").run()
    assert at.selectbox(key="seg_data_pick").value == first
    root = make_set(tmp_path / "b" / "street", n_train=3, n_val=1)
    Image.new("L", (20, 20), 1).save(root / "train" / "masks" / "train00.png")  # wrong size: one problem
    files = [(f"street/{p.relative_to(root).as_posix()}", p.read_bytes(), "application/octet-stream")
             for p in sorted(root.rglob("*")) if p.is_file()]
    at.file_uploader(key="seg_data_upload").set_value(files).run()
    at.button(key="seg_data_import_upload").click().run()
    assert not at.exception, [e.value for e in at.exception]
    second = at.session_state["draft_dataset_id"]
    assert second != first and at.selectbox(key="seg_data_pick").value == second
    assert {m.label: m.value for m in at.metric}["Problems"] == "1"
    assert any("Imported “street”" in s.value for s in at.success)
    labels = at.selectbox(key="seg_data_pick").options
    assert len(set(labels)) == 2, labels  # two sets named 'street' are told apart
    assert not [u for u in at.get("file_uploader") if u.key == "seg_data_upload"]  # emptied: no second import


def test_upload_folder_name() -> None:
    upload_folder_name = data.upload_folder_name
    assert upload_folder_name(["camvid/train/images/a.jpg", "camvid/classes.txt"]) == "camvid"
    assert upload_folder_name(["a.jpg", "camvid/classes.txt"]) == ""
    assert upload_folder_name([]) == ""


def test_a_stray_colour_class_is_pointed_out_on_the_data_page(home: Path, tmp_path: Path) -> None:
    """Colour masks without a classes.txt: every colour becomes a class, so a stray colour (a few pixels in one
    mask) is named as probably a slip rather than left as one more 'rare class'."""
    root = make_set(tmp_path / "ds", n_train=6, n_val=2, size=96, colour=True)
    mask = root / "train" / "masks" / "train01.png"
    rgb = np.asarray(Image.open(mask).convert("RGB")).copy()
    rgb[:2, :2] = (255, 0, 255)
    Image.fromarray(rgb).save(mask)
    dataset_id, _ = data.import_folder(root, "colours")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["draft_task"] = "segmentation"
    at.session_state["draft_dataset_id"] = dataset_id
    at.run()
    at.switch_page("views/segmentation_data.py").run()
    assert not at.exception
    warned = " ".join(w.value for w in at.warning)
    assert "colour 255,0,255" in warned and "in one image only" in warned, warned
