"""Detection data a user gets wrong: an empty or broken annotation file, photos without an annotation file, a box
outside its photo. Each is said by file in plain words, and a photo is never silently taught as 'nothing here'
when its boxes are unknown or were all dropped. Also: a dropped folder imports, runs carry the dataset's name, and
the Test page says how close a box came when none passes the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.tasks.detection import data as D
from core.tasks.detection import dataset as dstore
from core.tasks.detection.sample import make_rectangles
from tests.test_detection_pages import _app as detection_app
from tests.test_detection_pages import rects, trained  # noqa: F401 - fixtures

VOC = ("<annotation><filename>{name}</filename><object><name>cup</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
       "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")


def _img(path: Path, size=(100, 80), colour=(120, 120, 120)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _by_kind(ds: D.DetectionSet) -> dict[str, list[D.Problem]]:
    out: dict[str, list[D.Problem]] = {}
    for p in ds.problems:
        out.setdefault(p.kind, []).append(p)
    return out


def _voc(root: Path) -> Path:
    for i, name in enumerate(("a", "b", "c", "d")):
        _img(root / "JPEGImages" / f"{name}.jpg", colour=(40 * i, 90, 120))
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(VOC.format(name="a.jpg"))
    (root / "Annotations" / "b.xml").write_text(VOC.format(name="b.jpg"))
    (root / "Annotations" / "c.xml").write_text("")  # empty: c.jpg's boxes are unknown
    return root  # d.jpg has no XML file


def test_an_empty_xml_leaves_its_photo_out_and_says_why_once(tmp_path: Path) -> None:
    ds = D.load_folder(_voc(tmp_path / "voc"), workers=0)
    names = {a.name for a in ds.images}
    assert "c.jpg" not in names  # not taught as a photo with nothing in it
    bad = _by_kind(ds)["bad_annotation"]
    assert len(bad) == 1 and bad[0].message.startswith("c.xml is empty (0 bytes); c.jpg is left out")
    assert "c.xml: c.xml" not in bad[0].message and ".;" not in bad[0].message
    assert not any(p.file == "c.jpg" and p.kind == "no_annotation_file" for p in ds.problems)


def test_photos_without_an_annotation_file_are_warned_about(tmp_path: Path) -> None:
    ds = D.load_folder(_voc(tmp_path / "voc"), workers=0)
    missing = _by_kind(ds)["no_annotation_file"]
    assert [p.file for p in missing] == ["d.jpg"] and missing[0].severity == "warning"
    assert "nothing to find" in missing[0].message
    yolo = make_rectangles(tmp_path / "yolo", n=4, size=48, fmt="yolo")
    (yolo / "labels" / "img_001.txt").unlink()
    ds = D.load_folder(yolo, workers=0)
    assert [p.file for p in _by_kind(ds).get("no_annotation_file", [])] == ["img_001.png"]


def test_a_photo_whose_boxes_were_all_dropped_is_named(tmp_path: Path) -> None:
    root = make_rectangles(tmp_path / "coco", n=3, size=64)
    coco = json.loads((root / "annotations.json").read_text())
    for a in coco["annotations"]:
        if a["image_id"] == 1:
            a["bbox"] = [500, 500, 20, 20]  # outside the 64×64 photo
    (root / "annotations.json").write_text(json.dumps(coco))
    ds = D.load_folder(root, workers=0)
    lost = _by_kind(ds)["boxes_lost"]
    assert [p.file for p in lost] == ["img_000.png"] and "nothing to find" in lost[0].message
    assert "img_001.png" not in [p.file for p in lost]


@pytest.mark.parametrize(("text", "said"), [("", "is empty (0 bytes)"), ('{"images": [', "is not valid JSON"),
                                           ('{"annotations": []}', "no 'images' list")])
def test_a_broken_coco_file_is_refused_by_name(tmp_path: Path, text: str, said: str) -> None:
    root = make_rectangles(tmp_path / "coco", n=2, size=48)
    (root / "annotations.json").write_text(text)
    with pytest.raises(D.AnnotationError, match="annotations.json") as err:
        D.load_folder(root, workers=0)
    assert said in str(err.value)


def test_a_run_carries_the_dataset_name_not_its_id(home: Path, tmp_path: Path) -> None:
    dataset_id, _ = dstore.import_folder(make_rectangles(tmp_path / "r", n=8, size=48), "raccoons")
    assert dstore.resolve(dataset_id)["source"]["name"] == "raccoons"
    assert dstore.resolve(str(tmp_path / "r"))["source"]["name"] == "r"


def _app(page: str, **draft) -> AppTest:
    """The detection page `page`, drawn once."""
    return detection_app(page, **draft).run()


def test_a_dropped_folder_imports_with_its_name_and_warns_about_empty_photos(home: Path, tmp_path: Path) -> None:
    root = _voc(tmp_path / "kitchen")
    at = _app("views/detection_data.py")
    files = [(f"kitchen/{p.relative_to(root).as_posix()}", p.read_bytes(), "application/octet-stream")
             for p in sorted(root.rglob("*")) if p.is_file()]
    at.file_uploader(key="det_dir").set_value(files).run()
    at.button(key="det_dir_import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [d.name for d in dstore.list_sets()] == ["kitchen"]
    assert {m.label: m.value for m in at.metric}["Photos"] == "3"
    assert any("Imported “kitchen”: 3 photos with 2 boxes; 2 problems listed below." in s.value for s in at.success)
    warned = " ".join(w.value for w in at.warning).replace("\\", "")
    assert "d.jpg" in warned and "nothing to find" in warned and "Draw boxes" in warned
    # every problem readable in full (a table cell cut long messages at its width)
    full = next(e for e in at.expander if e.label == "Every message in full").markdown[0].value.replace("\\", "")
    listed = [p for p in dstore.load_set(dstore.list_sets()[0].id).problems if p.kind != "not_annotated"]
    assert full.count("\n- ") + 1 == len(listed) == 2 and all(f"**{p.file}**: {p.message}" in full for p in listed)


def test_test_page_says_how_close_the_best_box_came(trained: Path, rects: Path) -> None:  # noqa: F811
    at = _app("views/detection_test.py", run_id=trained.name)
    png = (rects / "images" / "img_000.png").read_bytes()
    at.slider(key="dtest_threshold").set_value(0.95).run()
    at.file_uploader(key="dtest_files").set_value([("shape.png", png, "image/png")]).run()
    assert not at.exception
    said = " ".join(i.value for i in at.info)
    assert "Nothing found above the threshold." not in said
    if not at.dataframe:  # no box at 0.95: the best score is named
        assert "the best one scored" in said or "not even a weak box" in said, said


def test_results_say_how_close_the_best_box_came(trained: Path) -> None:  # noqa: F811
    at = _app("views/runs.py", run_id=trained.name)
    at.button(key="det_results_evaluate").click().run()
    assert not at.exception
    at.slider(key="det_results_threshold").set_value(0.95).run()
    assert not at.exception
    ev = json.loads((trained / "evaluation.json").read_text())
    top = max((s for img in ev["images"] for s in img["pred"]["scores"]), default=None)
    said = " ".join(i.value for i in at.info)
    if top is not None and top < 0.95:
        assert f"best box scored {top:.2f}" in said, said


def test_moving_the_threshold_redraws_without_detecting_again(trained: Path, rects: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each move of the slider ran the detector again on every photo (1–3 s each on a CPU)."""
    from core.tasks.detection.predict import Detector

    calls: list[str] = []
    real = Detector.detect

    def counted(self, source, name="", threshold=0.5):
        calls.append(name)
        return real(self, source, name, threshold)

    monkeypatch.setattr(Detector, "detect", counted)
    at = _app("views/detection_test.py", run_id=trained.name)
    png = (rects / "images" / "img_000.png").read_bytes()
    at.file_uploader(key="dtest_files").set_value([("shape.png", png, "image/png")]).run()
    assert calls == ["shape.png"]
    for value in (0.3, 0.7, 0.1):
        at.slider(key="dtest_threshold").set_value(value).run()
        assert not at.exception
    assert calls == ["shape.png"]
