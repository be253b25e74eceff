"""The validation report: every problem kind, named files, blocking rules, duplicates found efficiently."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from data_fixtures import SHARED_DATASETS, image_bytes, make_tree, malformed_corpus, near_copy, write_image
from PIL import Image

from core.data.images import ImageInfo, Rejected
from core.data.validate import (
    ERROR,
    INFO,
    KINDS,
    WARNING,
    Record,
    ValidationConfig,
    analyze,
    check_folder,
    duplicate_groups,
    near_pairs,
)

FAST = ValidationConfig(workers=0)


def _info(seed: int, *, sha: str | None = None, phash: int | None = None, colors: int = 257,
          dhash: int | None = None) -> ImageInfo:
    rng = random.Random(seed)
    return ImageInfo(64, 64, "JPEG", "RGB", 1, 1000, sha or f"{rng.getrandbits(256):064x}",
                     f"{phash if phash is not None else rng.getrandbits(64):016x}", colors,
                     f"{dhash:016x}" if dhash is not None else "")


def _records(counts: dict[str, int], split: str = "train", start: int = 0) -> list[Record]:
    out = []
    for c, (label, n) in enumerate(counts.items()):
        for i in range(n):
            out.append(Record(f"{split}/{label}/{i}.jpg", label, split, _info(start + c * 1000 + i)))
    return out


def _kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def test_clean_dataset_has_no_problems() -> None:
    report = analyze(_records({"a": 12, "b": 12}))
    assert report.problems == () and not report.blocking
    assert report.counts == {"train": {"a": 12, "b": 12}}
    json.dumps(report.to_dict())


def test_class_with_one_image_blocks_training() -> None:
    report = analyze(_records({"a": 12, "b": 1}))
    [p] = report.of_kind("too_few_images")
    assert p.severity == ERROR and p.classes == ("b",) and "'b'" in p.message
    assert report.blocking


def test_empty_class_folder_blocks() -> None:
    report = analyze(_records({"a": 12, "b": 12}), classes=["a", "b", "empty"])
    assert report.of_kind("too_few_images")[0].classes == ("empty",) and report.blocking


def test_few_images_is_a_warning() -> None:
    report = analyze(_records({"a": 12, "b": 5}))
    [p] = report.of_kind("few_images")
    assert p.severity == WARNING and p.classes == ("b",) and not report.blocking


def test_single_class_blocks() -> None:
    report = analyze(_records({"a": 12}))
    assert "too_few_classes" in _kinds(report) and report.blocking


def test_no_images_blocks() -> None:
    report = analyze([Record("a/x.jpg", "a", None, None, Rejected("truncated file"))])
    assert "no_images" in _kinds(report) and report.blocking


def test_imbalance_warns_above_ratio() -> None:
    assert "imbalance" not in _kinds(analyze(_records({"a": 50, "b": 10})))
    [p] = analyze(_records({"a": 51, "b": 10})).of_kind("imbalance")
    assert p.severity == WARNING and set(p.classes) == {"a", "b"} and "51" in p.message


def test_rejected_files_are_named_with_reason() -> None:
    recs = _records({"a": 12, "b": 12})
    recs.append(Record("a/bad.jpg", "a", "train", None, Rejected("truncated file")))
    recs.append(Record("a/eps.jpg", "a", "train", None, Rejected("format EPS not allowed", "unsupported_format")))
    recs.append(Record("b/tiny.png", "b", "train", None, Rejected("too small: 8×8 px", "too_small")))
    recs.append(Record("b/big.png", "b", "train", None, Rejected("image too large: 196 megapixels > cap", "too_large")))
    report = analyze(recs)
    msgs = {p.kind: p.message for p in report.problems}
    assert "a/bad.jpg: truncated file" in msgs["unreadable"]
    assert "a/eps.jpg" in msgs["unsupported_format"] and "EPS" in msgs["unsupported_format"]
    assert "b/tiny.png" in msgs["too_small"] and "b/big.png" in msgs["too_large"]
    assert all(p.severity == WARNING for p in report.problems)
    assert report.usable_files == 24 and report.total_files == 28 and not report.blocking


def test_low_detail_image_is_flagged() -> None:
    recs = _records({"a": 12, "b": 12})
    recs.append(Record("a/placeholder.gif", "a", "train", _info(99, colors=32)))
    recs.append(Record("a/blank.png", "a", "train", _info(98, colors=1)))
    report = analyze(recs)
    assert report.files_with("low_detail") == {"a/placeholder.gif", "a/blank.png"}
    assert any("single flat colour" in p.message for p in report.of_kind("low_detail"))


def test_exact_duplicates_within_class() -> None:
    recs = _records({"a": 12, "b": 12})
    recs.append(Record("train/a/copy.jpg", "a", "train", recs[0].info))
    [p] = analyze(recs).of_kind("exact_duplicate")
    assert set(p.files) == {"train/a/0.jpg", "train/a/copy.jpg"} and len(p.fix_files) == 1
    assert "train/a/copy.jpg" in p.message


def test_near_duplicates_within_class() -> None:
    recs = _records({"a": 12, "b": 12})
    base = int(recs[0].info.phash, 16)
    recs.append(Record("train/a/near.jpg", "a", "train", _info(500, phash=base ^ 0b1011)))  # 3 bits differ
    recs.append(Record("train/a/far.jpg", "a", "train", _info(501, phash=base ^ (0b11111 << 20))))  # 5 bits differ
    [p] = analyze(recs).of_kind("near_duplicate")
    assert set(p.files) == {"train/a/0.jpg", "train/a/near.jpg"} and p.severity == INFO


def test_near_duplicate_needs_dhash_confirmation() -> None:
    """Same phash neighbourhood but a different dhash (same scene, another object): not a duplicate."""
    recs = _records({"a": 12, "b": 12})
    recs.append(Record("train/a/x.jpg", "a", "train", _info(600, phash=0xF0F0F0F0F0F0F0F0, dhash=0x1234)))
    recs.append(Record("train/a/y.jpg", "a", "train", _info(601, phash=0xF0F0F0F0F0F0F0F3, dhash=0x1234 ^ 0xFFF)))
    recs.append(Record("train/a/z.jpg", "a", "train", _info(602, phash=0xF0F0F0F0F0F0F0F1, dhash=0x1234 ^ 0x3)))
    report = analyze(recs)
    assert report.files_with("near_duplicate") == {"train/a/x.jpg", "train/a/z.jpg"}
    loose = analyze(recs, config=ValidationConfig(near_duplicate_dhash=None))
    assert loose.files_with("near_duplicate") == {"train/a/x.jpg", "train/a/y.jpg", "train/a/z.jpg"}


def test_leakage_between_train_and_val() -> None:
    recs = _records({"a": 12, "b": 12}) + _records({"a": 3, "b": 3}, "val", start=50_000)
    recs.append(Record("val/a/leak.jpg", "a", "val", recs[1].info))  # exact copy of a train image
    near = int(recs[2].info.phash, 16) ^ 1
    recs.append(Record("val/a/leak_near.jpg", "a", "val", _info(777, phash=near)))
    report = analyze(recs)
    leaks = report.of_kind("leakage")
    assert {f for p in leaks for f in p.files} == {"train/a/1.jpg", "val/a/leak.jpg", "train/a/2.jpg",
                                                  "val/a/leak_near.jpg"}
    assert all(p.fix_files and all(f.startswith("train/") for f in p.fix_files) for p in leaks)
    assert "exact_duplicate" not in _kinds(report)


def test_conflicting_labels() -> None:
    recs = _records({"a": 12, "b": 12})
    recs.append(Record("train/b/also_a.jpg", "b", "train", recs[0].info))
    [p] = analyze(recs).of_kind("conflicting_label")
    assert set(p.classes) == {"a", "b"} and "train/b/also_a.jpg" in p.message and p.fix_files == ()


def test_missing_split_problems() -> None:
    recs = _records({"a": 12, "b": 12}) + _records({"a": 3}, "val", start=50_000)
    recs += _records({"c": 4}, "val", start=60_000)
    report = analyze(recs)
    kinds = {(p.severity, p.classes) for p in report.of_kind("missing_split")}
    assert (ERROR, ("c",)) in kinds and (WARNING, ("b",)) in kinds


def test_every_kind_is_documented() -> None:
    assert set(KINDS) >= {"unreadable", "unsupported_format", "too_small", "too_large", "too_few_images",
                          "few_images", "imbalance", "exact_duplicate", "near_duplicate", "leakage",
                          "conflicting_label", "low_detail", "not_image_file"}


def test_near_pairs_matches_brute_force() -> None:
    rng = random.Random(3)
    hashes = [rng.getrandbits(64) for _ in range(1500)]
    for i in range(0, 300, 3):  # plant near neighbours at distances 1..6
        hashes.append(hashes[i] ^ sum(1 << rng.randrange(64) for _ in range(1 + i % 6)))
    hashes = list(dict.fromkeys(hashes))
    for d in (2, 4, 6):
        fast = {tuple(sorted(p)) for p in near_pairs(hashes, d)}
        brute = {(a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes))
                 if (hashes[a] ^ hashes[b]).bit_count() <= d}
        assert fast == brute and brute


def test_near_duplicate_search_scales() -> None:
    rng = random.Random(4)
    recs = [Record(f"a/{i}.jpg", "a", "train", _info(i, phash=rng.getrandbits(64))) for i in range(20_000)]
    t0 = time.monotonic()
    duplicate_groups(recs, 4)
    assert time.monotonic() - t0 < 5


def test_check_folder_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "zipped" / "myset"
    make_tree(root, {"ants": 11, "bees": 11}, split="train")
    make_tree(root, {"ants": 3, "bees": 3}, split="val", seed=1)
    leak = (root / "train" / "ants" / "img_000.jpg").read_bytes()
    (root / "val" / "ants" / "leak.jpg").write_bytes(leak)
    (root / "train" / "bees" / "same_as_ant.jpg").write_bytes((root / "train" / "ants" / "img_001.jpg").read_bytes())
    near = near_copy((root / "train" / "ants" / "img_002.jpg").read_bytes())
    (root / "train" / "ants" / "near.jpg").write_bytes(near)
    (root / "train" / "ants" / "copy.jpg").write_bytes((root / "train" / "ants" / "img_003.jpg").read_bytes())
    for name, data in malformed_corpus().items():
        (root / "train" / "bees" / name).write_bytes(data)
    (root / "train" / "bees" / "notes.txt").write_text("x")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(root / "train" / "ants" / "blank.png")
    calls: list[tuple[int, int]] = []
    fc = check_folder(tmp_path / "zipped", config=ValidationConfig(workers=2),
                      on_progress=lambda d, t: calls.append((d, t)))
    report = fc.report
    assert fc.layout.kind == "split_folders" and fc.layout.prefix == "myset/"
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] == len(fc.records)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    p = "myset/train/"
    assert report.files_with("leakage") >= {p + "ants/img_000.jpg", "myset/val/ants/leak.jpg"}
    assert report.files_with("conflicting_label") == {p + "ants/img_001.jpg", p + "bees/same_as_ant.jpg"}
    assert report.files_with("near_duplicate") == {p + "ants/img_002.jpg", p + "ants/near.jpg"}
    assert report.files_with("exact_duplicate") == {p + "ants/img_003.jpg", p + "ants/copy.jpg"}
    assert report.files_with("low_detail") == {p + "ants/blank.png"}
    assert report.files_with("not_image_file") == {p + "bees/notes.txt"}
    rejected = {f for k in ("unreadable", "unsupported_format", "too_large", "too_small") for f in report.files_with(k)}
    assert rejected == {p + "bees/" + n for n in malformed_corpus()}
    assert report.counts["train"] == {"ants": 14, "bees": 12} and report.counts["val"] == {"ants": 4, "bees": 3}
    assert not report.blocking
    data = json.loads(json.dumps(report.to_dict()))
    assert data["problems"] and all(set(x) >= {"kind", "severity", "files", "classes", "message"}
                                    for x in data["problems"])


def test_check_folder_stratified_split_and_blocking(tmp_path: Path) -> None:
    make_tree(tmp_path, {"cats": 10, "dogs": 1})
    fc = check_folder(tmp_path, config=FAST)
    assert fc.report.split_mode == "stratified"
    assert fc.report.counts == {"train": {"cats": 8, "dogs": 1}, "val": {"cats": 2}}
    assert fc.report.blocking and fc.report.of_kind("too_few_images")[0].classes == ("dogs",)


def test_cancelling_stops_the_workers(tmp_path: Path) -> None:
    import psutil

    make_tree(tmp_path, {"a": 10, "b": 10})
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. a browser-test server

    def cancel(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("cancelled by the user")

    def new_children() -> list:
        return [p for p in psutil.Process().children(recursive=True) if p.pid not in before]

    with pytest.raises(RuntimeError, match="cancelled"):
        check_folder(tmp_path, config=ValidationConfig(workers=2), on_progress=cancel)
    deadline = time.monotonic() + 5
    while new_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert new_children() == []


def test_min_side_is_configurable(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 2, "b": 2})
    write_image(tmp_path / "a" / "small.jpg", 5, size=(40, 40))
    assert "too_small" not in _kinds(check_folder(tmp_path, config=FAST).report)
    report = check_folder(tmp_path, config=ValidationConfig(workers=0, min_side=48)).report
    assert report.files_with("too_small") == {"a/small.jpg"}


def test_image_bytes_helper_makes_distinct_images() -> None:
    assert image_bytes(1) != image_bytes(2)


@pytest.mark.datasets
def test_hymenoptera_placeholder_is_reported() -> None:
    root = SHARED_DATASETS / "hymenoptera"
    if not root.is_dir():
        pytest.skip("shared datasets not present")
    report = check_folder(root).report
    named = [p for p in report.problems if any(f.endswith("train/ants/imageNotFound.gif") for f in p.files)]
    assert named, "imageNotFound.gif not reported"
    assert any("imageNotFound.gif" in p.message for p in named)
    assert report.counts == {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}}
    assert not report.blocking
