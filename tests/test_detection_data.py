"""Detection data: COCO / VOC / YOLO parsers on small hand-made files (good and broken), auto-detection, the checks,
the split, the store side file, box-aware augmentation and the mAP function against a hand-computed case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.tasks.detection import data as D
from core.tasks.detection.augment import augment, crop, hflip
from core.tasks.detection.metrics import match_image, mean_average_precision


def _img(path: Path, size=(100, 80), colour=(120, 120, 120)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _kinds(ds) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in ds.problems:
        out.setdefault(p.kind, []).append(p.message)
    return out


@pytest.fixture()
def coco_folder(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    _img(root / "images" / "a.jpg", colour=(10, 20, 30))
    _img(root / "images" / "b.jpg", colour=(200, 20, 30))
    _img(root / "images" / "neg.jpg", colour=(10, 200, 30))
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80},
                   {"id": 3, "file_name": "neg.jpg", "width": 100, "height": 80},
                   {"id": 4, "file_name": "gone.jpg", "width": 100, "height": 80},
                   {"id": 5, "file_name": "broken.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [80, 60, 40, 40]},  # past the edge: clipped
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 10]},  # zero area: dropped
            {"id": 4, "image_id": 2, "category_id": 99, "bbox": [5, 5, 10, 10]},  # unknown class: dropped
            {"id": 5, "image_id": 2, "category_id": 7, "bbox": [150, 100, 10, 10]},  # fully outside: dropped
            {"id": 6, "image_id": 4, "category_id": 1, "bbox": [1, 1, 5, 5]},  # image missing
            {"id": 7, "image_id": 42, "category_id": 1, "bbox": [1, 1, 5, 5]},  # unknown image id
        ],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_coco_parser_reports_every_problem_by_file(coco_folder: Path) -> None:
    ds = D.load_folder(coco_folder, workers=0)
    assert ds.format == "coco"
    by_name = {a.name: a for a in ds.images}
    assert set(by_name) == {"a.jpg", "b.jpg", "neg.jpg"}
    assert by_name["a.jpg"].boxes == [[10.0, 10.0, 40.0, 30.0], [80.0, 60.0, 100.0, 80.0]]
    assert by_name["a.jpg"].labels == ["cat", "dog"]
    assert by_name["b.jpg"].boxes == [] and by_name["neg.jpg"].boxes == []  # negatives stay as images
    kinds = _kinds(ds)
    assert any("a.jpg" in m and "clipped" in m for m in kinds["clipped"])
    assert any("b.jpg" in m for m in kinds["zero_area"])
    assert any("b.jpg" in m and "99" in m for m in kinds["unknown_class"])
    assert any("b.jpg" in m for m in kinds["outside"])
    assert any("gone.jpg" in m for m in kinds["missing_image"])
    assert any("42" in m for m in kinds["unknown_image"])
    assert any("broken.jpg" in m for m in kinds["unreadable"])
    assert ds.classes == ["cat", "dog"]


def test_voc_parser_with_broken_files(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    _img(root / "JPEGImages" / "x.jpg")
    _img(root / "JPEGImages" / "y.jpg")
    _img(root / "JPEGImages" / "z.jpg")  # no xml: a negative
    ann = root / "Annotations"
    ann.mkdir()
    (ann / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>100</width><height>80</height></size>"
        "<object><name>car</name><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>120</xmax><ymax>50</ymax></bndbox>"
        "</object><object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>")
    (ann / "y.xml").write_text("<annotation><filename>y.jpg</filename><object><name>car</name>")  # broken XML
    (ann / "w.xml").write_text("<annotation><filename>missing.jpg</filename></annotation>")
    (ann / "bomb.xml").write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><annotation/>')
    ds = D.load_folder(root, workers=0)
    assert ds.format == "voc"
    by_name = {a.name: a for a in ds.images}
    assert by_name["x.jpg"].boxes == [[10.0, 5.0, 100.0, 50.0], [1.0, 1.0, 9.0, 9.0]]
    assert by_name["z.jpg"].boxes == []
    kinds = _kinds(ds)
    assert any("y.xml" in m for m in kinds["bad_annotation"])
    assert any("bomb.xml" in m and "DOCTYPE" in m for m in kinds["bad_annotation"])
    assert any("w.xml" in m for m in kinds["missing_image"])
    assert any("x.jpg" in m for m in kinds["clipped"])
    assert sorted(ds.classes) == ["car", "person"]


def test_yolo_parser_scales_boxes_and_drops_unknown_ids(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _img(root / "images" / "p.jpg", size=(200, 100))
    _img(root / "images" / "q.jpg", size=(200, 100))
    labels = root / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("ball\nbat\n")
    (labels / "p.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.95 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\nnot a line\n")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    ds = D.load_folder(root, workers=0)
    assert ds.format == "yolo"
    p = next(a for a in ds.images if a.name == "p.jpg")
    assert p.labels == ["ball", "bat"]
    assert p.boxes[0] == pytest.approx([80.0, 30.0, 120.0, 70.0])
    assert p.boxes[1] == pytest.approx([170.0, 40.0, 200.0, 60.0])  # clipped at the right edge
    kinds = _kinds(ds)
    assert any("p.jpg" in m and "5" in m for m in kinds["unknown_class"])
    assert any("p.txt line 4" in m for m in kinds["bad_box"])
    assert any("orphan.txt" in m for m in kinds["missing_image"])
    assert next(a for a in ds.images if a.name == "q.jpg").boxes == []


def test_yaml_names_forms() -> None:
    assert D._yaml_names("names: [a, 'b c']\n") == ["a", "b c"]
    assert D._yaml_names("path: x\nnames:\n  0: cat\n  1: dog\nnc: 2\n") == ["cat", "dog"]
    assert D._yaml_names("names:\n  - one\n  - two\n") == ["one", "two"]


def test_auto_detection_prefers_coco_and_accepts_named_annotations(tmp_path: Path, coco_folder: Path) -> None:
    fmt, where = D.find_annotations(coco_folder)
    assert fmt == "coco" and where.name == "annotations.json"
    assert D.parse_folder(coco_folder, coco_folder / "annotations.json").format == "coco"
    with pytest.raises(D.AnnotationError, match="no such"):
        D.parse_folder(coco_folder, coco_folder / "nope.json")
    plain = tmp_path / "plain"
    _img(plain / "one.jpg")
    parsed = D.parse_folder(plain)
    assert parsed.format == "none" and [a.boxes for a in parsed.images] == [[]]


def test_seeded_split_is_stable_and_keeps_duplicates_together(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(30):
        _img(root / f"{i:02d}.png", colour=(i * 8, 50, 50))
    _img(root / "copy.png", colour=(0, 50, 50))  # same bytes as 00.png
    first = D.load_folder(root, seed=3, workers=0)
    again = D.load_folder(root, seed=3, workers=0)
    assert [a.split for a in first.images] == [a.split for a in again.images]
    assert {a.split for a in first.images} == {"train", "val"}
    split_of = {a.name: a.split for a in first.images}
    assert split_of["00.png"] == split_of["copy.png"]
    assert any(p.kind == "duplicate" for p in first.problems)
    other = D.load_folder(root, seed=4, workers=0)
    assert [a.split for a in other.images] != [a.split for a in first.images]


def test_duplicates_across_given_splits_are_named(tmp_path: Path) -> None:
    a = D.ImageAnn("train/a.png", "", split="train", sha256="x" * 64)
    b = D.ImageAnn("val/a.png", "", split="val", sha256="x" * 64)
    ds = D.assign_splits(D.DetectionSet("coco", "", [], [a, b], []))
    found = [p for p in ds.problems if p.kind == "duplicate_across_splits"]
    assert found and "train/a.png" in found[0].message and "val/a.png" in found[0].message


def test_summary_counts(coco_folder: Path) -> None:
    s = D.summary(D.load_folder(coco_folder, workers=0))
    assert s["n_images"] == 3 and s["n_boxes"] == 2 and s["n_negatives"] == 2
    assert s["boxes_per_class"] == {"cat": 1, "dog": 1}
    assert sorted(s["boxes_per_image"]) == [0, 0, 2]
    assert len(s["box_sizes"]) == 2


def test_store_import_keeps_boxes_and_task(home: Path, coco_folder: Path) -> None:
    from core.data import store
    from core.tasks.detection import dataset as S

    dataset_id, ds = S.import_folder(coco_folder, "pets")
    assert store.load_dataset(dataset_id).task == "detection"
    assert [s.id for s in store.list_datasets(task="classification")] == []
    a = next(x for x in ds.images if x.name == "a.jpg")
    assert Path(a.path).is_file() and a.labels == ["cat", "dog"]
    ds = S.set_boxes(dataset_id, a.path, [[1, 2, 30, 40], [5, 5, 5, 9]], ["cat", "bird"])
    a = next(x for x in ds.images if x.name == "a.jpg")
    assert a.boxes == [[1.0, 2.0, 30.0, 40.0]]  # the zero-width box is dropped
    assert "bird" in ds.classes
    S.rename_class(dataset_id, "cat", "kitten")
    reloaded = S.load_set(dataset_id)
    assert next(x for x in reloaded.images if x.name == "a.jpg").labels == ["kitten"]
    for img in reloaded.images:
        S.set_boxes(dataset_id, img.path, [[2, 2, 20, 20]], ["kitten"])
    manifest = S.resolve(dataset_id, seed=0)
    assert manifest["task"] == "detection" and all(Path(it["path"]).is_file() for it in manifest["items"])


def test_images_alone_then_boxes(home: Path, tmp_path: Path) -> None:
    from core.tasks.detection import dataset as S
    from core.trainset import DatasetProblem

    files = [(f"photo{i}.png", str(_img(tmp_path / f"p{i}.png", colour=(i * 20, 9, 9)))) for i in range(6)]
    dataset_id, ds = S.import_images(files, "drawn")
    assert len(ds.images) == 6 and all(not a.boxes for a in ds.images)
    with pytest.raises(DatasetProblem):
        S.resolve(dataset_id)
    train = next(a for a in ds.images if a.split == "train")
    S.set_boxes(dataset_id, train.path, [[10, 10, 50, 50]], ["thing"])
    manifest = S.resolve(dataset_id)
    assert manifest["classes"] == ["thing"]


# --- augmentation -------------------------------------------------------------------------------------------------

def _red_box_image(h=80, w=120, box=(30, 20, 70, 50)) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.full((3, h, w), 128, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = torch.tensor([230, 10, 10], dtype=torch.uint8).view(3, 1, 1)
    return img, torch.tensor([list(map(float, box))])


def _red_extent(img: torch.Tensor) -> list[float]:
    mask = (img[0].int() > 180) & (img[1].int() < 80)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_flip_and_crop_keep_boxes_on_the_object() -> None:
    img, boxes = _red_box_image()
    f_img, f_boxes = hflip(img, boxes)
    assert _red_extent(f_img) == f_boxes[0].tolist() == [50.0, 20.0, 90.0, 50.0]
    c_img, c_boxes, c_labels = crop(img, boxes, torch.tensor([1]), 10, 40, 60, 60)
    assert _red_extent(c_img) == c_boxes[0].tolist() == [0.0, 10.0, 30.0, 40.0]
    _, gone, _ = crop(img, boxes, torch.tensor([1]), 0, 0, 30, 34)  # only a sliver of the object is left
    assert len(gone) == 0


def test_random_augmentations_keep_boxes_on_the_object_for_many_seeds() -> None:
    img, boxes = _red_box_image()
    for seed in range(25):
        gen = torch.Generator().manual_seed(seed)
        a_img, a_boxes, a_labels = augment(img, boxes, torch.tensor([1]), ("crop", "flip"), gen)
        assert len(a_boxes) == 1 and a_labels.tolist() == [1]
        assert _red_extent(a_img) == pytest.approx(a_boxes[0].tolist(), abs=1.0)


def test_augmentation_is_a_pure_function_of_the_generator() -> None:
    img, boxes = _red_box_image()
    runs = [augment(img, boxes, torch.tensor([1]), ("crop", "flip", "color"), torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# --- mAP ----------------------------------------------------------------------------------------------------------

def test_map_against_a_hand_computed_case() -> None:
    """Two objects of class a; a hit (0.9) then a false positive (0.8); the second object is never found.
    Precision is 1 up to recall 0.5 and 0 after it, so COCO's 101-point AP is 51/101 at every IoU threshold.
    Class b: one object found exactly (AP 1)."""
    targets = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]},
               {"boxes": [[0, 0, 40, 40]], "labels": [2]}]
    preds = [{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]], "scores": [0.9, 0.8], "labels": [1, 1]},
             {"boxes": [[0, 0, 40, 40]], "scores": [0.7], "labels": [2]}]
    res = mean_average_precision(preds, targets, ["a", "b"], curve=True)
    per = {r["class"]: r for r in res["per_class"]}
    assert per["a"]["ap50"] == pytest.approx(51 / 101, abs=1e-4)
    assert per["a"]["ap"] == pytest.approx(51 / 101, abs=1e-4)
    assert per["b"]["ap50"] == pytest.approx(1.0)
    assert res["map50"] == pytest.approx((51 / 101 + 1) / 2, abs=1e-4)
    assert per["a"]["n_boxes"] == 2
    curve = next(c for c in res["pr_curve"] if c["class"] == "a")
    assert curve["precision"][0] == pytest.approx(1.0) and curve["precision"][-1] == 0.0


def test_match_image_marks_hits_misses_and_false_positives() -> None:
    pred = {"boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], "scores": [0.9, 0.8, 0.2],
            "labels": [1, 1, 1]}
    target = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]}
    assert match_image(pred, target, 0.5) == {"hits": [0], "false_positives": [1], "misses": [1]}
    assert match_image(pred, target, 0.1) == {"hits": [0, 2], "false_positives": [1], "misses": []}


def test_zip_import_finds_the_annotations_inside(home: Path, coco_folder: Path, tmp_path: Path) -> None:
    import zipfile

    from core.tasks.detection import dataset as S

    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in coco_folder.rglob("*"):
            if path.is_file():
                zf.write(path, f"pets/{path.relative_to(coco_folder).as_posix()}")
    dataset_id, ds = S.import_zip(archive, "zipped pets", display_name="My pets.zip")
    assert ds.format == "coco"
    assert {a.name: a.labels for a in ds.images}["a.jpg"] == ["cat", "dog"]
    assert any(p.kind == "unreadable" and "broken.jpg" in p.message for p in ds.problems)
    assert ds.source.startswith("My pets.zip: pets") and ".extract-" not in json.dumps(ds.to_dict())


def test_a_zip_without_photos_is_refused_by_its_own_name(home: Path, tmp_path: Path) -> None:
    import zipfile

    from core.tasks.detection import dataset as S

    archive = tmp_path / "tmp81x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes/readme.txt", "no photos here")
    with pytest.raises(D.AnnotationError) as err:
        S.import_zip(archive, "empty", display_name="holiday boxes.zip")
    assert "holiday boxes.zip" in str(err.value) and ".extract-" not in str(err.value)


def test_the_sample_is_named_sample_detection_as_the_other_samples(home: Path) -> None:
    from core.tasks.detection.dataset import resolve
    from core.tasks.detection.sample import find_sample
    from core.trainset import DatasetProblem

    manifest = resolve("sample:detection")  # the command line's `--data sample:detection`
    assert manifest["classes"] and find_sample() is not None  # imported once into the store
    assert resolve("sample:detection")["classes"] == manifest["classes"]
    with pytest.raises(DatasetProblem, match="sample:nonsense: no such sample"):
        resolve("sample:nonsense")
