"""Segmentation core: mask loading (id, colour, broken), mask-aware augmentation, IoU, training, export parity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from core.tasks.segmentation import data, metrics
from core.tasks.segmentation.augment import SegAugment, augment_pair
from core.tasks.segmentation.data import IGNORE, ClassTable, SegDataError
from core.trainset import DatasetProblem
from tests.data_fixtures import IPHONE_ROTATED, example_module

COLOURS = {0: (0, 0, 0), 1: (200, 30, 30), 2: (30, 200, 30)}


def _shapes(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, np.ndarray]:
    """A photo-like image with a disc (class 1) and a square (class 2); the mask is exact."""
    img = Image.fromarray(rng.integers(90, 140, (size, size, 3), dtype=np.uint8))
    mask = Image.new("L", (size, size), 0)
    di, dm = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    r = int(rng.integers(8, 14))
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, size - r))
    di.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(230, 40, 40))
    dm.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    s = int(rng.integers(6, 12))
    x, y = int(rng.integers(0, size - 2 * s)), int(rng.integers(0, size - 2 * s))
    di.rectangle((x, y, x + 2 * s, y + 2 * s), fill=(40, 40, 230))
    dm.rectangle((x, y, x + 2 * s, y + 2 * s), fill=2)
    return img, np.asarray(mask)


def make_set(root: Path, n_train: int = 12, n_val: int = 4, colour: bool = False, seed: int = 0,
             void: bool = False, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = _shapes(rng, size)
            if void:
                mask = mask.copy()
                mask[:2, :] = 9
            img.save(root / split / "images" / f"{split}{i:02d}.jpg", quality=95)
            if colour:
                rgb = np.zeros((*mask.shape, 3), dtype=np.uint8)
                for k, c in COLOURS.items():
                    rgb[mask == k] = c
                Image.fromarray(rgb).save(root / split / "masks" / f"{split}{i:02d}.png")
            else:
                Image.fromarray(mask).save(root / split / "masks" / f"{split}{i:02d}.png")
    if not colour:
        names = ["background", "disc", "square"] + [f"unused{i}" for i in range(6)] + (["void"] if void else [])
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


# --- masks -------------------------------------------------------------------------------------------------------

def test_id_masks_with_classes_txt_and_void(tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", void=True)
    manifest = data.resolve_folder(root, seed=0)
    table = ClassTable.from_dict(manifest["table"])
    assert table.ignore == 9  # the class named "void" becomes the ignore value
    assert "void" not in table.names and table.names[:3] == ("background", "disc", "square")
    assert manifest["split_mode"] == "folders"
    assert sum(it["split"] == "val" for it in manifest["items"]) == 4
    mask = data.load_mask(manifest["items"][0]["mask"], table)
    assert mask.dtype == np.uint8 and (mask[:2] == IGNORE).all() and set(np.unique(mask[2:])) <= {0, 1, 2}


def test_colour_masks_are_detected_and_mapped(tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds", colour=True)
    manifest = data.resolve_folder(root, seed=0)
    table = ClassTable.from_dict(manifest["table"])
    assert table.kind == "colour" and len(table.names) == 3
    assert set(table.colours) == set(COLOURS.values())
    mask = data.load_mask(manifest["items"][0]["mask"], table)
    rgb = np.asarray(Image.open(manifest["items"][0]["mask"]).convert("RGB"))
    back = np.array(table.colours, dtype=np.uint8)[mask]
    assert (back == rgb).all()  # the mapping is exact, pixel for pixel


def test_broken_masks_are_named_by_file(tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds")
    masks = root / "train" / "masks"
    (masks / "train00.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # undecodable mask
    Image.new("L", (10, 10), 1).save(masks / "train01.png")  # wrong size
    Image.new("L", (64, 64), 77).save(masks / "train02.png")  # a value that is no class
    (masks / "train03.png").unlink()  # missing
    Image.new("L", (64, 64), 0).save(masks / "orphan.png")  # extra
    (root / "train" / "images" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")  # image that fails
    manifest = data.resolve_folder(root, seed=0)
    problems = manifest["report"]["problems"]
    kinds = {p["kind"]: p["file"] for p in problems}
    assert kinds["unreadable_mask"].endswith("train00.jpg")
    assert kinds["size_mismatch"].endswith("train01.jpg")
    assert kinds["unknown_values"].endswith("train02.jpg") and "77" in next(
        p["message"] for p in problems if p["kind"] == "unknown_values")
    assert kinds["missing_mask"].endswith("train03.jpg")
    assert kinds["extra_mask"].endswith("orphan.png")
    assert kinds["unreadable_image"].endswith("bad.jpg")
    names = {it["name"] for it in manifest["items"]}
    assert not any(n.endswith(("train00.jpg", "train01.jpg", "train03.jpg", "bad.jpg")) for n in names)


def test_resize_nearest_never_blends_ids() -> None:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:, 20:] = 7
    big = data.resize_nearest(mask, (97, 61))
    assert big.shape == (61, 97) and set(np.unique(big)) == {0, 7}


def test_folder_without_masks_folder_is_a_clear_problem(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetProblem, match="images/"):
        data.resolve_folder(tmp_path / "x")


def test_seeded_split_is_reproducible_and_saved(tmp_path: Path) -> None:
    root = make_set(tmp_path / "ds")
    flat = tmp_path / "flat"
    for sub in ("images", "masks"):
        (flat / sub).mkdir(parents=True)
        for f in (root / "train" / sub).iterdir():
            (flat / sub / f.name).write_bytes(f.read_bytes())
    a = data.resolve_folder(flat, seed=3)
    b = data.resolve_folder(flat, seed=3)
    c = data.resolve_folder(flat, seed=4)
    split = {it["name"]: it["split"] for it in a["items"]}
    assert split == {it["name"]: it["split"] for it in b["items"]}
    assert split != {it["name"]: it["split"] for it in c["items"]}
    assert sum(v == "val" for v in split.values()) == round(0.2 * 12)


def test_store_import_keeps_masks_and_split(home: Path, tmp_path: Path) -> None:
    from core.data.store import list_datasets

    root = make_set(tmp_path / "ds", colour=True)
    dataset_id, report = data.import_folder(root, "shapes")
    assert dataset_id in [d.id for d in list_datasets(task="segmentation")]
    assert dataset_id not in [d.id for d in list_datasets(task="classification")]
    assert report.splits == {"train": 12, "val": 4} and not report.problems
    manifest = data.resolve_stored(dataset_id)
    table = ClassTable.from_dict(manifest["table"])
    assert table.kind == "ids" and len(table.names) == 3  # colour masks are stored as id masks
    new = data.update_table(dataset_id, ["ground", "disc", "box"], None)
    assert new.names == ("ground", "disc", "box")


def _zip_folder(folder: Path, target: Path, top: str = "") -> Path:
    import zipfile

    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{top}{f.relative_to(folder).as_posix()}")
    return target


def test_zip_imports_speak_of_the_zip_never_of_a_temporary_folder(home: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    (wrong / "pictures").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(wrong / "pictures" / "a.jpg")
    spooled = _zip_folder(wrong, tmp_path / "tmpab12cd.zip")
    with pytest.raises(SegDataError) as err:
        data.import_zip(spooled, "x", display_name="street scenes.zip")
    assert "street scenes.zip" in str(err.value) and ".extract-" not in str(err.value)
    good = _zip_folder(make_set(tmp_path / "ds", n_train=4, n_val=2), tmp_path / "spool.zip", top="shapes/")
    dataset_id, _ = data.import_zip(good, "shapes", display_name="my shapes.zip")
    assert data.read_side(dataset_id)["source"] == {"kind": "zip", "name": "my shapes.zip: shapes"}


# --- augmentation --------------------------------------------------------------------------------------------------

def _derived_pair(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Blocky image whose mask is a function of its pixels: class = which of 3 grey levels the pixel has."""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 3, (size // 8, size // 8))
    ids = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    levels = np.array([30, 130, 230], dtype=np.uint8)
    img = np.repeat(levels[ids][..., None], 3, axis=2)
    return img, ids


def _derive(img: torch.Tensor) -> torch.Tensor:
    return (img[0].float() - 30).div(100).round().clamp(0, 2).long()


def test_augmentation_keeps_image_and_mask_aligned_exactly_without_resizing() -> None:
    img, mask = _derived_pair()
    aug = SegAugment(crop=64, scale=(1.0, 1.0), flip=True, color=False)
    for seed in range(8):
        x, y = augment_pair(img, mask, aug, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert torch.equal(_derive(x), y)


def test_augmentation_with_scale_jitter_stays_aligned_and_keeps_ids() -> None:
    img, mask = _derived_pair()
    aug = SegAugment(crop=64, scale=(0.6, 1.6), flip=True, color=False)
    for seed in range(8):
        x, y = augment_pair(img, mask, aug, torch.Generator().manual_seed(seed))
        valid = y != IGNORE
        assert set(torch.unique(y).tolist()) <= {0, 1, 2, IGNORE}  # nearest-neighbour: no blended ids
        agree = float((_derive(x)[valid] == y[valid]).float().mean())
        assert agree > 0.93, agree  # only the bilinear edges of the image may differ


def test_padding_uses_ignore() -> None:
    img, mask = _derived_pair(32)
    x, y = augment_pair(img, mask, SegAugment(crop=64, scale=(1.0, 1.0), flip=False, color=False),
                        torch.Generator().manual_seed(0))
    assert (y[32:, :] == IGNORE).all() and (y[:, 32:] == IGNORE).all()


# --- metrics -------------------------------------------------------------------------------------------------------

def test_iou_against_a_hand_computed_case_with_ignore() -> None:
    truth = torch.tensor([[0, 0, 1, 1],
                          [0, 0, 1, 1],
                          [2, 2, IGNORE, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 2],
                         [2, 0, 0, 0]])
    cm = metrics.confusion(pred, truth, 3)
    # class 0: TP 3 (truth 0 at 4 px, one predicted 1), FP 1 (truth 2 → 0); the IGNORE pixels do not count
    # class 1: TP 3, FN 1 (truth 1 → 2), FP 1 (truth 0 → 1); class 2: TP 1, FN 1, FP 1
    ious = metrics.iou_per_class(cm)
    assert ious == pytest.approx([3 / 5, 3 / 5, 1 / 3])
    assert metrics.mean_iou(cm) == pytest.approx((3 / 5 + 3 / 5 + 1 / 3) / 3)
    assert metrics.pixel_accuracy(cm) == pytest.approx(7 / 10)


def test_absent_class_is_left_out_of_the_mean() -> None:
    cm = metrics.confusion(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), 4)
    assert math.isnan(metrics.iou_per_class(cm)[3])
    assert metrics.mean_iou(cm) == 1.0


# --- training -------------------------------------------------------------------------------------------------------

def _train(tmp_path: Path, root: Path, epochs: int, subscribers=(), **train_kw):
    from dataclasses import replace

    from core import runs
    from core.config import FreezeConfig, RunConfig
    from core.tasks.segmentation import TASK

    tc = replace(TASK.default_train(), epochs=epochs, batch_size=4, lr=3e-3, **{"train_size": 64, **train_kw})
    cfg = RunConfig("test_efficientnet", str(root), FreezeConfig("all"), tc, task="segmentation", pretrained=False)
    manifest = TASK.resolve_data(str(root), 0, arch="fpn")
    run_dir = runs.create_run(cfg, manifest, tmp_path / "runs")
    return run_dir, TASK.fit(run_dir, subscribers)


@pytest.mark.slow
def test_a_tiny_model_learns_synthetic_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = make_set(tmp_path / "ds", n_train=24, n_val=6)
    seen = []
    run_dir, res = _train(tmp_path, root, epochs=8, subscribers=[lambda e: seen.append(e.to_dict())])
    assert res.state == "completed"
    # chance: predicting the majority class everywhere gives mIoU ≈ share of background / 3 (< 0.3)
    assert res.best_val_accuracy > 0.45, res.history
    events = json.loads(json.dumps(seen))
    started = next(e for e in events if e["type"] == "fit_started")
    assert started["metric"] == "val_miou" and started["metric_label"] == "mIoU"
    assert "val_pixel_accuracy" in next(e for e in events if e["type"] == "epoch_ended")["metrics"]


def test_training_crops_follow_train_size_within_the_image(tmp_path: Path) -> None:
    """train_size picks the crop side (the CLI's --train-size, the Train page's slider); never above the images."""
    from core.events import FitStarted

    root = make_set(tmp_path / "ds", n_train=4, n_val=2, size=128)
    for size, expected in ((64, 64), (1024, 128)):  # the images are 128 px: a larger wish is cut to them
        seen: list = []
        _train(tmp_path / str(size), root, epochs=1, subscribers=[seen.append], train_size=size)
        note = next(e for e in seen if isinstance(e, FitStarted)).device_note
        assert f"{expected}² crops" in note, note


def test_resume_after_a_stop_gives_the_same_weights(tmp_path: Path) -> None:
    from core import runs
    from core.tasks.segmentation import TASK

    root = make_set(tmp_path / "ds", n_train=8, n_val=2)
    full_dir, full = _train(tmp_path, root, epochs=2)
    from dataclasses import replace

    from core.config import FreezeConfig, RunConfig

    tc = replace(TASK.default_train(), epochs=2, batch_size=4, lr=3e-3, train_size=64)
    cfg = RunConfig("test_efficientnet", str(root), FreezeConfig("all"), tc, task="segmentation", pretrained=False)
    manifest = TASK.resolve_data(str(root), 0, arch="fpn")
    part_dir = runs.create_run(cfg, manifest, tmp_path / "runs2")
    calls = {"n": 0}

    def stop_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    assert TASK.fit(part_dir, should_stop=stop_after_3).state == "stopped"
    assert TASK.fit(part_dir).state == "completed"
    a = runs.load_checkpoint(full_dir)[0]["model"]
    b = runs.load_checkpoint(part_dir)[0]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_parity_and_predict_from_export(tmp_path: Path) -> None:
    from core.tasks.segmentation.export import export_run, load_export
    from core.tasks.segmentation.predict import SegPredictor

    root = make_set(tmp_path / "ds", n_train=4, n_val=2)
    run_dir, _ = _train(tmp_path, root, epochs=1)
    out = tmp_path / "export"
    for fmt in ("safetensors", "onnx"):
        res = export_run(run_dir, fmt, out)
        assert res.ok, res.check
        assert res.check["max_rel_diff"] <= 1e-4 and res.check["differing_pixels_not_ties"] == 0
        assert res.check["summary"].startswith("masks") and " at size" in res.check["summary"]
    loaded = load_export(out)
    assert loaded.manifest["task"] == "segmentation"
    import onnx  # written by the traced exporter (~1 s; the dynamo one took ~15 s and writes opset 20)

    graph = onnx.load(str(out / "model.onnx"))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    img = next((root / "val" / "images").iterdir())
    a = SegPredictor.from_run(run_dir).predict(str(img)).mask
    b = SegPredictor.from_export(out).predict(str(img)).mask
    assert a.shape == (64, 64) and (a == b).all()


def test_the_segmentation_example_script_skips_a_bad_file_and_reads_an_iphone_photo(tmp_path: Path, capsys) -> None:
    """One unreadable file stopped the script with a traceback (the photos after it got no mask); HEIC photos (an
    iPhone's default) could not be opened at all."""
    from core.tasks.segmentation.export import export_run

    root = make_set(tmp_path / "ds", n_train=4, n_val=2)
    run_dir, _ = _train(tmp_path, root, epochs=1)
    out = tmp_path / "export"
    assert export_run(run_dir, "onnx", out).ok
    photos = tmp_path / "photos"
    photos.mkdir()
    heic = photos / "IMG_0001.HEIC"
    heic.write_bytes(IPHONE_ROTATED.read_bytes())
    notes = photos / "notes.jpg"
    notes.write_text("not a photo")
    example = example_module(out, "segmentation_example")
    assert example.main([str(notes), str(heic)]) == 1
    captured = capsys.readouterr()
    assert f"{notes}: cannot read this file" in captured.err and str(heic) in captured.out
    with Image.open(photos / "IMG_0001.mask.png") as mask:
        assert mask.size == (64, 96)  # the upright photo's size: the HEIC's rotation applied


def _logits(seed: int = 0, shape: tuple = (2, 3, 8, 8)) -> torch.Tensor:
    """Logits of magnitude ~10 whose two best values are at least 1 apart at every pixel (no ties)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g) * 4 + 2  # 2 … 6
    best = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return base.scatter(1, best, 10.0)  # one class at 10 per pixel: the margin is ≥ 4


def test_export_check_allows_float32_noise_relative_to_the_logits_scale() -> None:
    """ONNX vs PyTorch in float32 differ by ~1e-4 on logits near 10 (1e-5 of their scale): identical masks pass."""
    from core.tasks.segmentation.export import TOLERANCE, compare

    ref = _logits()
    sign = torch.where(torch.rand(ref.shape, generator=torch.Generator().manual_seed(1)) < 0.5, -1.0, 1.0)
    out = ref + 1.1e-4 * sign
    check = compare([ref, ref[:1]], [out, out[:1]], TOLERANCE)
    assert check["ok"], check
    assert check["masks_identical"] and check["mask_agreement"] == 1.0 and check["differing_pixels_not_ties"] == 0
    assert check["max_abs_diff"] == pytest.approx(1.1e-4, rel=1e-2)
    assert check["logit_scale"] == pytest.approx(10.0) and check["tolerance"] == pytest.approx(1e-3)
    assert check["summary"].startswith("masks identical to PyTorch's") and "1.1e-04" in check["summary"]


def test_export_check_fails_a_mask_pixel_flipped_away_from_a_tie() -> None:
    from core.tasks.segmentation.export import TOLERANCE, compare

    ref = _logits()
    out = ref.clone()
    k = int(ref[0, :, 3, 4].argmax())
    out[0, (k + 1) % 3, 3, 4] = 10.5  # another class wins a pixel where PyTorch's margin is ≥ 4
    check = compare([ref], [out], TOLERANCE)
    assert not check["ok"] and not check["masks_identical"] and check["differing_pixels_not_ties"] == 1
    assert check["summary"].startswith("check failed: 1 pixels get another class")


def test_export_check_accepts_a_flip_at_a_tie_but_not_large_logit_errors() -> None:
    from core.tasks.segmentation.export import TOLERANCE, compare

    ref = _logits()
    k = int(ref[0, :, 0, 0].argmax())
    ref[0, (k + 1) % 3, 0, 0] = 10.0 - 2e-4  # a near tie at pixel (0, 0)
    out = ref.clone()
    out[0, (k + 1) % 3, 0, 0] = 10.0 + 2e-4  # rounding picks the other class there: allowed
    check = compare([ref], [out], TOLERANCE)
    assert check["ok"] and not check["masks_identical"] and check["differing_pixels_not_ties"] == 0
    assert "except at ties" in check["summary"]
    worse = ref + 0.05  # a shift of 5e-3 of the scale changes no mask, yet is far beyond float32 noise
    check = compare([ref], [worse], TOLERANCE)
    assert not check["ok"] and check["masks_identical"] and "the masks agree, but the logits differ" in check["summary"]
    nan = ref.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert not compare([ref], [nan], TOLERANCE)["ok"]
    assert not compare([ref], [ref[:, :2]], TOLERANCE)["ok"]


def test_a_pickle_disguised_as_export_is_refused(tmp_path: Path) -> None:
    from core.export import ExportError
    from core.tasks.segmentation.export import load_export

    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x80\x04\x95 pickle payload")
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match="pickle|safetensors"):
        load_export(folder)


def test_class_table_rejects_duplicates() -> None:
    with pytest.raises(SegDataError):
        ClassTable(("a", "b"), (1, 1), ((0, 0, 0), (1, 1, 1)))


# --- imports that miss images/ or masks/ name what is missing ----------------------------------------------------

def _photos(folder: Path, names: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (32, 32), (120, 90, 60)).save(folder / name)
    return folder


def test_an_import_without_images_or_masks_folder_says_which_is_missing(home: Path, tmp_path: Path) -> None:
    flat = _photos(tmp_path / "flat")  # photos, but no images/ folder
    with pytest.raises(SegDataError, match=r"^flat has no images/ folder"):
        data.import_folder(flat, "x")
    with pytest.raises(SegDataError, match=r"^street\.zip has no images/ folder"):
        data.import_zip(_zip_folder(flat, tmp_path / "spool1.zip"), "x", display_name="street.zip")
    only_images = tmp_path / "only_images"
    _photos(only_images / "images")
    with pytest.raises(SegDataError, match=r"^only_images has no masks/ folder: put one beside images/") as err:
        data.import_folder(only_images, "x")
    assert "no classes" not in str(err.value)
    with pytest.raises(SegDataError, match=r"^street\.zip: scenes has no masks/ folder"):
        data.import_zip(_zip_folder(only_images, tmp_path / "spool2.zip", top="scenes/"), "x",
                        display_name="street.zip")
    split = tmp_path / "split"
    _photos(split / "train" / "images")
    _photos(split / "val" / "images", ("c.jpg",))
    with pytest.raises(SegDataError, match=r"has no masks/ folder: put one beside train/images/"):
        data.import_folder(split, "x")
    (only_images / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(only_images / "masks" / "other.png")
    with pytest.raises(SegDataError, match=r"none of the 2 images has a mask in masks/ .*a\.png for a\.jpg"):
        data.import_folder(only_images, "x")
    (only_images / "classes.txt").write_text("background\nroad\n")  # masks can then be painted in the app
    assert len(data.scan_folder(only_images).pairs) == 2
