"""Stored datasets: generated names only, bad files skipped and reported, atomic manifest, edits round-trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from data_fixtures import image_bytes, make_tree, malformed_corpus, near_copy, snapshot, zip_bytes

from core import trainset
from core.data import store
from core.data.archive import ArchiveError
from core.data.splits import SplitConfig
from core.data.validate import ValidationConfig

FAST = ValidationConfig(workers=0)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _manifest(ds: store.Dataset) -> dict:
    return json.loads((ds.root / "dataset.json").read_text())


def test_import_folder_round_trip(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ants": 5, "bees": 4}, split="train")
    make_tree(src, {"ants": 2, "bees": 2}, split="val", seed=1)
    calls: list[tuple[int, int]] = []
    res = store.import_folder(src, "My <b>set</b>", config=FAST, on_progress=lambda d, t: calls.append((d, t)))
    ds = res.dataset
    assert res.imported == 13 and res.skipped == ()
    assert calls[-1] == (13, 13)
    assert ds.root == home / "datasets" / ds.id and len(ds.id) == 32
    data = _manifest(ds)
    assert data["task"] == "classification" and data["classes"] == ["ants", "bees"] and data["name"] == "My <b>set</b>"
    assert data["split"]["mode"] == "folders" and data["split"]["seed"] == 0
    assert data["report"]["blocking"] is False
    item = data["items"][0]
    assert set(item) >= {"file", "original_name", "class", "split"}
    for it in ds.items:
        path = ds.path(it)
        assert path.is_file() and path.name == f"{it.sha256[:16]}.jpg"
        assert it.original_name.startswith(("train/", "val/"))
    assert store.load_dataset(ds.id) == ds
    assert [s.id for s in store.list_datasets()] == [ds.id]
    assert (src / "train" / "ants" / "img_000.jpg").exists()  # copied, not moved
    assert not [p for p in snapshot(home) if ".tmp" in p or ".staging" in p or ".importing" in p]


def test_bad_files_are_skipped_and_reported_never_abort(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ants": 12, "bees": 12})
    corpus = malformed_corpus()
    for name, data in corpus.items():
        (src / "bees" / name).write_bytes(data)
    (src / "ants" / "readme.txt").write_text("x")
    res = store.import_folder(src, "mixed", config=FAST)
    assert res.imported == 24
    assert {s.original_name for s in res.skipped} == {f"bees/{n}" for n in corpus}
    assert all(s.reason for s in res.skipped)
    report = store.dataset_report(store.load_dataset(res.dataset.id))
    named = {f for p in report.problems for f in p.files}
    assert {f"bees/{n}" for n in corpus} <= named and "ants/readme.txt" in named
    assert len(list((res.dataset.root / "files").iterdir())) == 24


def test_stratified_when_no_split_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 10, "b": 5})
    ds = store.import_folder(src, "s", split=SplitConfig(val_fraction=0.2, seed=3), config=FAST).dataset
    assert ds.split_mode == "stratified"
    val = [it for it in ds.items if it.split == "val"]
    assert {it.label for it in val} == {"a", "b"} and len(val) == 3
    again = store.import_folder(src, "s2", split=SplitConfig(val_fraction=0.2, seed=3), config=FAST).dataset
    assert {(it.sha256, it.split) for it in again.items} == {(it.sha256, it.split) for it in ds.items}


def test_import_files_uses_generated_names_only(home: Path, tmp_path: Path) -> None:
    before_outside = snapshot(tmp_path)
    files = [("../../evil.jpg", image_bytes(1), "ants"), ("<script>alert(1)</script>.jpg", image_bytes(2), "ants"),
             ("/etc/passwd", image_bytes(3), "bees"), ("C:\\x.png", image_bytes(4, "PNG"), "bees"),
             ("page.jpg", b"<html>nope</html>", "bees")]
    res = store.import_files(files, "uploads", config=FAST)
    ds = res.dataset
    assert res.imported == 4 and [s.original_name for s in res.skipped] == ["page.jpg"]
    assert sorted(p.name for p in (ds.root / "files").iterdir()) == sorted(ds.path(i).name for i in ds.items)
    assert {i.original_name for i in ds.items} == {"../../evil.jpg", "<script>alert(1)</script>.jpg", "/etc/passwd",
                                                    "C:\\x.png"}
    new_outside = {p for p in snapshot(tmp_path) - before_outside if not p.startswith("home")}
    assert new_outside == set()
    assert any(i.file.endswith(".png") for i in ds.items)


def test_import_zip_with_hostile_entries(tmp_path: Path, home: Path) -> None:
    entries = [(f"myset/ants/{i}.jpg", image_bytes(i)) for i in range(3)]
    entries += [(f"myset/bees/{i}.jpg", image_bytes(100 + i)) for i in range(3)]
    entries += [("../escape.jpg", image_bytes(50)), ("__MACOSX/myset/._x.jpg", b"junk"),
                ("myset/bees/inner.zip", zip_bytes([("a.jpg", image_bytes(9))]))]
    archive = tmp_path / "up.zip"
    archive.write_bytes(zip_bytes(entries))
    before = snapshot(tmp_path)
    res = store.import_zip(archive, "zipped", config=FAST)
    assert {p for p in snapshot(tmp_path) - before if p.split("/")[0] != "home"} == set()
    ds = res.dataset
    assert res.imported == 6 and ds.classes == ("ants", "bees")
    assert {i.original_name for i in ds.items} >= {"myset/ants/0.jpg", "myset/bees/2.jpg"}
    report = store.dataset_report(ds)
    refused = {f for p in report.problems for f in p.files}
    assert {"../escape.jpg", "myset/bees/inner.zip"} <= refused
    assert not [p for p in snapshot(home) if ".extract-" in p]


def test_refused_zip_leaves_nothing(tmp_path: Path, home: Path) -> None:
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"\x1f\x8b" + b"\x00" * 100)
    with pytest.raises(ArchiveError):
        store.import_zip(archive, "bad", config=FAST)
    assert store.list_datasets() == [] and snapshot(home / "datasets") == set()


def test_failed_import_is_invisible_and_cleaned(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 3, "b": 3})

    def explode(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("user closed the tab")

    with pytest.raises(RuntimeError):
        store.import_folder(src, "x", config=FAST, on_progress=explode)
    assert store.list_datasets() == [] and snapshot(home / "datasets") == set()


def test_class_edits_and_weights(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ants": 12, "bees": 3})
    ds = store.import_folder(src, "e", config=FAST).dataset
    w = store.class_weights(ds)
    n_ants = sum(1 for i in ds.items if i.split == "train" and i.label == "ants")
    n_bees = sum(1 for i in ds.items if i.split == "train" and i.label == "bees")
    total = n_ants + n_bees
    assert w == {"ants": pytest.approx(total / (2 * n_ants)), "bees": pytest.approx(total / (2 * n_bees))}
    assert store.class_weights(_manifest(ds)) == w
    ds = store.rename_class(ds.id, "bees", "wasps")
    assert ds.classes == ("ants", "wasps") and {i.label for i in ds.items} == {"ants", "wasps"}
    with pytest.raises(store.DatasetError, match="already exists"):
        store.rename_class(ds.id, "wasps", "ANTS")
    with pytest.raises(store.DatasetError):
        store.rename_class(ds.id, "nope", "x")
    ds = store.add_class(ds.id, "flies")
    assert ds.classes == ("ants", "flies", "wasps") and ds.report["blocking"] is True
    with pytest.raises(trainset.DatasetProblem, match="'e' cannot be trained on .*flies"):  # neither app nor CLI
        trainset.resolve(ds.id)
    assert store.class_weights(ds)["flies"] == 0.0
    res = store.add_images(ds.id, "flies", [(f"cam_{i}.jpg", image_bytes(900 + i)) for i in range(3)] +
                           [("broken.jpg", b"")], config=FAST)
    assert res.imported == 3 and [s.original_name for s in res.skipped] == ["broken.jpg"]
    ds = store.load_dataset(ds.id)
    assert sum(i.label == "flies" for i in ds.items) == 3 and ds.report["blocking"] is False
    assert {i.split for i in ds.items if i.label == "flies"} == {"train", "val"}


def test_drop_files_fixes_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 12, "b": 12})
    first = (src / "a" / "img_000.jpg").read_bytes()
    (src / "a" / "dup.jpg").write_bytes(first)
    (src / "a" / "near.jpg").write_bytes(near_copy((src / "a" / "img_001.jpg").read_bytes()))
    (src / "b" / "bad.jpg").write_bytes(b"")
    ds = store.import_folder(src, "d", config=FAST).dataset
    report = store.dataset_report(ds)
    dup = report.of_kind("exact_duplicate")
    assert len(dup) == 1 and len(dup[0].fix_files) == 1
    names = {i.file: i.original_name for i in ds.items}
    assert {names[f] for f in dup[0].files} == {"a/img_000.jpg", "a/dup.jpg"}
    fixes = [f for p in report.problems for f in p.fix_files]
    ds = store.drop_files(ds.id, fixes)
    assert len(ds.items) == 24 and ds.skipped == ()
    report = store.dataset_report(ds)
    assert not {"exact_duplicate", "near_duplicate", "unreadable"} & {p.kind for p in report.problems}
    assert len(list((ds.root / "files").iterdir())) == 24  # the dropped files are gone from disk


def test_delete_and_bad_ids(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 2, "b": 2})
    ds = store.import_folder(src, "x", config=FAST).dataset
    for bad in ("../x", "", ds.id + "/..", ds.id.upper(), "0" * 32):
        with pytest.raises(store.DatasetError):
            store.load_dataset(bad)
        with pytest.raises(store.DatasetError):
            store.delete_dataset(bad)
    store.delete_dataset(ds.id)
    assert store.list_datasets() == [] and snapshot(home / "datasets") == set()


def test_tampered_manifest_paths_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 2, "b": 2})
    ds = store.import_folder(src, "x", config=FAST).dataset
    data = _manifest(ds)
    data["items"][0]["file"] = "../../../../etc/passwd"
    (ds.root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(store.DatasetError, match="damaged"):
        store.load_dataset(ds.id)
    assert store.list_datasets() == []


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": 2, "b": 2})
    ds = store.import_folder(src, "x", config=FAST).dataset
    before = (ds.root / "dataset.json").read_bytes()

    def crash(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError):
        store.rename_class(ds.id, "a", "c")
    assert (ds.root / "dataset.json").read_bytes() == before
    assert sorted(p.name for p in ds.root.iterdir()) == [".lock", "dataset.json", "files"]


def test_list_ignores_incomplete_and_cleanup(home: Path) -> None:
    (home / "datasets" / ".importing-abc").mkdir(parents=True)
    (home / "datasets" / ("f" * 32)).mkdir()
    assert store.list_datasets() == []
    assert store.cleanup_incomplete(older_than_s=-1) == 1
    assert not (home / "datasets" / ".importing-abc").exists()


def test_relabel_moves_files_to_another_class_and_keeps_their_split(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"cats": 4, "dogs": 4}, split="train")
    make_tree(src, {"cats": 2, "dogs": 2}, split="val", seed=1)
    ds = store.import_folder(src, "pets").dataset
    moved = next(it for it in ds.items if it.label == "cats" and it.split == "train")
    after = store.relabel_files(ds.id, [moved.file], "dogs")
    again = next(it for it in store.load_dataset(ds.id).items if it.file == moved.file)
    assert again.label == "dogs" and again.split == "train" and len(after.items) == len(ds.items)
    with pytest.raises(store.DatasetError, match="no class"):
        store.relabel_files(ds.id, [moved.file], "birds")


def _fake_run(run_id: str, dataset_id: str, name: str = "", renamed: str = "") -> Path:
    """A run folder as core.runs writes it, reduced to what says which dataset it was trained on."""
    from core.settings import runs_root

    folder = runs_root() / run_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": dataset_id, "name": name}))
    if renamed:
        (folder / "meta.json").write_text(json.dumps({"name": renamed}))
    return folder


def test_runs_using_lists_the_runs_trained_on_a_dataset_by_name(tmp_path: Path) -> None:
    from core.data.usage import describe_runs, runs_using

    _fake_run("20240101-000000-aaaaaaaaaaaa", "a" * 32, name="first")
    _fake_run("20240102-000000-bbbbbbbbbbbb", "a" * 32, name="second", renamed="my best")
    _fake_run("20240103-000000-cccccccccccc", "a" * 32)
    _fake_run("20240104-000000-dddddddddddd", "b" * 32, name="other data")
    used = runs_using("a" * 32)
    assert [u.name for u in used] == ["20240103-000000-cccccccccccc", "my best", "first"]  # newest first
    assert describe_runs(used, shown=2) == "3 runs ('20240103-000000-cccccccccccc', 'my best' and 1 more)"
    assert describe_runs(used[2:]) == "1 run ('first')"
    assert runs_using("c" * 32) == []


def test_an_edit_of_a_dataset_runs_used_goes_into_a_new_version(tmp_path: Path) -> None:
    """The runs keep what they were trained on: the photos (none deleted), the classes and the name."""
    src = tmp_path / "src"
    make_tree(src, {"ants": 6, "bees": 6, "wasps": 6})
    ds = store.import_folder(src, "Insects", config=FAST).dataset
    with store.editing(ds.id) as target:  # no run yet: edited in place
        store.add_class(target.id, "flies")
    assert target.id == ds.id and target.kept is None and len(store.list_datasets()) == 1
    _fake_run("20240101-000000-aaaaaaaaaaaa", ds.id, name="first try")
    before = store.load_dataset(ds.id)
    with store.editing(ds.id) as target:
        store.remove_class(target.id, "wasps", config=FAST)
    assert target.id != ds.id and target.kept == before and [r.name for r in target.runs] == ["first try"]
    assert store.load_dataset(ds.id) == before  # the name, classes and splits the run used
    assert all(before.path(it).is_file() for it in before.items)  # and every photo it was trained on
    copy = store.load_dataset(target.id)
    assert copy.name == "Insects v2" and copy.classes == ("ants", "bees", "flies")
    assert copy.source["copied_from"] == ds.id and copy.source["kind"] == "folder"
    assert {it.file for it in copy.items} == {it.file for it in before.items if it.label != "wasps"}
    kept = next(it for it in copy.items)
    assert os.path.samefile(copy.path(kept), before.path(kept))  # a hard link: no second copy of the photos
    with pytest.raises(store.DatasetError, match="already exists"), store.editing(ds.id) as failed:
        store.add_class(failed.id, "ants")
    assert len(store.list_datasets()) == 2  # the copy made for an edit that failed is gone again
    with store.editing(ds.id) as again:
        store.rename_class(again.id, "ants", "red ants")
    assert store.load_dataset(again.id).name == "Insects v3"
    _fake_run("20240102-000000-bbbbbbbbbbbb", target.id)
    with store.editing(target.id) as later:  # a version runs used is kept too
        store.add_class(later.id, "moths")
    assert store.load_dataset(later.id).name == "Insects v4" and "moths" not in store.load_dataset(target.id).classes


def test_an_edited_sample_is_a_new_dataset_and_the_sample_stays(sample_textures: Path) -> None:
    from core.data.samples import ensure_sample_dataset, find_sample_dataset

    sample_id = ensure_sample_dataset("textures", config=FAST)
    sample = store.load_dataset(sample_id)
    with store.editing(sample_id) as target:  # the sample always stays as it is, even before any run
        store.add_class(target.id, "sand")
    assert target.id != sample_id and target.kept == sample and target.runs == ()
    assert store.load_dataset(sample_id) == sample and find_sample_dataset("textures") == sample_id
    mine = store.load_dataset(target.id)
    assert mine.name == "Edited sample: textures (brick, grass, gravel, sand)"
    assert mine.source["kind"] == "edited sample"
    with store.editing(target.id) as same:  # the user's own copy, no run yet: edited in place
        store.remove_class(same.id, "brick", config=FAST)
    assert same.id == target.id
    assert store.load_dataset(target.id).name == "Edited sample: textures (grass, gravel, sand)"
    with store.editing(sample_id) as other:  # the same edit again: a second copy, told apart by its name
        store.add_class(other.id, "sand")
    with store.editing(sample_id) as third:
        store.add_class(third.id, "sand")
    assert store.load_dataset(other.id).name == "Edited sample: textures (brick, grass, gravel, sand)"
    assert store.load_dataset(third.id).name == "Edited sample: textures (brick, grass, gravel, sand) v2"
    assert [s.name for s in store.list_datasets()].count(sample.name) == 1
