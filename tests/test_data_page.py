"""AppTest for the Data page: render, sample data in one click, uploads, the validation report and its fixes."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from data_fixtures import image_bytes, make_tree
from streamlit.testing.v1 import AppTest

from core.data import store
from core.data.samples import ensure_sample_dataset, find_sample_dataset
from core.data.validate import ValidationConfig

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
FAST = ValidationConfig(workers=0)


def _page(**draft: object) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    for key, value in draft.items():
        at.session_state[f"draft_{key}"] = value
    at.switch_page("views/data.py")
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _problems(at: AppTest) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if "details" in df.value.columns)


def _messages(elements) -> str:
    return "\n".join(e.value for e in elements)


@pytest.fixture()
def planted(home: Path, tmp_path: Path) -> store.Dataset:
    """ants/bees with one exact duplicate and one broken file, imported into the test's store."""
    src = tmp_path / "planted"
    make_tree(src, {"ants": 12, "bees": 12})
    (src / "ants" / "copy_of_img_000.jpg").write_bytes((src / "ants" / "img_000.jpg").read_bytes())
    (src / "bees" / "broken.jpg").write_bytes(image_bytes(7, size=(128, 128))[:400])
    return store.import_folder(src, "planted", config=FAST).dataset


def test_renders_empty_with_every_way_in(home: Path) -> None:
    at = _page()
    _ok(at)
    assert at.title[0].value == "2 · Bring your photos"
    assert "No datasets yet" in _messages(at.info)
    assert at.button(key="data_use_sample")
    assert at.button(key="data_import_path")  # the app is bound to 127.0.0.1: server paths are offered
    uploader = at.file_uploader(key="data_upload_folder")
    assert uploader.accept_directory and uploader.accept_multiple_files
    assert at.file_uploader(key="data_upload_zip").allowed_type == [".zip"]
    assert not at.selectbox  # nothing to choose yet


def test_sample_button_creates_the_dataset_once_and_sets_the_draft(home: Path, sample_textures: Path) -> None:
    at = _page()
    at.button(key="data_use_sample").click().run()
    _ok(at)
    dataset_id = at.session_state["draft_dataset_id"]
    ds = store.load_dataset(dataset_id)
    assert ds.source["kind"] == "sample" and ds.classes == ("brick", "grass", "gravel")
    assert at.selectbox(key="data_select").value == dataset_id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == f"{len(ds.items)}" and metrics["Classes"] == "3"
    assert "Ready to train" in _messages(at.success)
    links = [link.value for link in at.page_link]
    assert "Next: choose layers" in links and any("choose one first" in link for link in links)  # no model yet
    # a second click (or another session) reuses the stored copy
    at.button(key="data_use_sample").click().run()
    assert at.session_state["draft_dataset_id"] == dataset_id
    assert ensure_sample_dataset("textures") == dataset_id == find_sample_dataset("textures")
    assert len(store.list_datasets()) == 1


def test_an_edited_sample_becomes_the_users_and_the_sample_comes_back_fresh(home: Path, sample_textures: Path) -> None:
    sample_id = ensure_sample_dataset("textures")
    edited = store.remove_class(sample_id, "brick")
    assert edited.name == "Edited sample: textures (grass, gravel)"  # named for what it holds now
    assert store.add_class(sample_id, "sand").name == "Edited sample: textures (grass, gravel, sand)"
    fresh = ensure_sample_dataset("textures")  # "Use the sample dataset" again
    assert fresh != sample_id and store.load_dataset(fresh).classes == ("brick", "grass", "gravel")
    assert store.load_dataset(sample_id).classes == ("grass", "gravel", "sand")  # the user's copy is kept


def test_sample_chosen_on_home_becomes_the_stored_copy(home: Path, sample_textures: Path) -> None:
    at = _page(dataset_id="sample:textures")
    _ok(at)
    dataset_id = at.session_state["draft_dataset_id"]
    assert dataset_id == find_sample_dataset("textures")
    assert at.selectbox(key="data_select").value == dataset_id


def test_a_rerun_does_not_resend_the_empty_choice(planted: store.Dataset) -> None:
    """Nothing chosen yet: only the first draw sets the box's value. A rerun that sent "set it to nothing" again
    would, when still in flight as the user picks, blank the box in the browser while the app used the pick."""
    at = _page()
    _ok(at)
    box = at.selectbox(key="data_select")
    assert box.value is None and box.proto.set_value  # first draw on this visit
    at.run()  # a rerun from any other widget
    _ok(at)
    assert not at.selectbox(key="data_select").proto.set_value
    at.selectbox(key="data_select").select(planted.id).run()
    assert at.session_state["draft_dataset_id"] == planted.id
    assert not at.selectbox(key="data_select").proto.set_value  # the user's own choice is not sent back


def test_report_names_duplicate_and_broken_file_and_fixes_drop_them(planted: store.Dataset) -> None:
    at = _page(dataset_id=planted.id)
    _ok(at)
    assert at.selectbox(key="data_select").value == planted.id
    assert at.subheader[0].value == "planted"
    problems = _problems(at)
    assert {"duplicate", "unreadable"} <= set(problems["reason"])
    files = " ".join(problems["files"])
    assert "ants/copy_of_img_000.jpg" in files and "ants/img_000.jpg" in files and "bees/broken.jpg" in files
    assert {"Images": "25", "Errors": "0"}.items() <= {m.label: m.value for m in at.metric}.items()

    at.button(key="data_fix_duplicates").click().run()
    _ok(at)
    ds = store.load_dataset(planted.id)
    names = [it.original_name for it in ds.items]
    assert len(names) == 24 and names.count("ants/img_000.jpg") + names.count("ants/copy_of_img_000.jpg") == 1
    assert "Dropped 1 duplicate" in _messages(at.success)
    problems = _problems(at)  # the report was re-run
    assert "duplicate" not in set(problems["reason"]) and "unreadable" in set(problems["reason"])

    # the broken file was never imported: the fix only clears its note, and says so (it said "Drop bad files (1)")
    assert at.button(key="data_fix_bad").label == "Clear the notes about files never imported (1)"
    at.button(key="data_fix_bad").click().run()
    _ok(at)
    ds = store.load_dataset(planted.id)
    assert ds.skipped == () and len(ds.items) == 24  # nothing good was lost
    assert "Dropped the notes about 1 file that were never imported" in _messages(at.success)
    assert not [df for df in at.dataframe if "details" in df.value.columns]
    assert "Ready to train: no problems found." in _messages(at.success)
    assert at.session_state["draft_dataset_id"] == planted.id


def test_blocking_errors_are_stated(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "tiny"
    make_tree(src, {"cats": 1, "dogs": 5})
    ds = store.import_folder(src, "tiny", config=FAST).dataset
    at = _page(dataset_id=ds.id)
    _ok(at)
    blocked = _messages(at.error)
    assert "Training is blocked" in blocked and "cats" in blocked
    assert {m.label: m.value for m in at.metric}["Errors"] != "0"


def test_a_class_that_blocks_training_can_be_removed_from_the_page(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "tiny"
    make_tree(src, {"ants": 5, "bees": 5, "wasps": 1})
    ds = store.import_folder(src, "tiny", config=FAST).dataset
    at = _page(dataset_id=ds.id)
    assert "wasps" in _messages(at.error)  # one photo of wasps blocks training
    at.selectbox(key="data_remove_class").set_value("wasps").run()
    assert at.button(key="data_remove").disabled  # not without the confirmation
    at.checkbox(key="data_remove_confirm").check().run()
    at.button(key="data_remove").click().run()
    _ok(at)
    after = store.load_dataset(ds.id)
    assert after.classes == ("ants", "bees") and not after.report["blocking"]
    assert "Training is blocked" not in _messages(at.error)


def test_class_weights_are_stored_in_the_draft(home: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "even", {"ants": 6, "bees": 6})
    even = store.import_folder(tmp_path / "even", "even", config=FAST).dataset
    at = _page(dataset_id=even.id)
    _ok(at)
    assert not [b for b in at.button if b.key == "data_fix_weights"]  # nothing to balance: not offered
    assert "nothing to balance" in _messages(at.caption)
    make_tree(tmp_path / "uneven", {"ants": 12, "bees": 6})
    uneven = store.import_folder(tmp_path / "uneven", "uneven", config=FAST).dataset
    at = _page(dataset_id=uneven.id)
    at.button(key="data_fix_weights").click().run()
    _ok(at)
    assert at.session_state["draft_class_weights"] is True
    at.button(key="data_weights_off").click().run()
    assert at.session_state["draft_class_weights"] is False


def test_add_and_rename_class_and_camera_photo(planted: store.Dataset) -> None:
    at = _page(dataset_id=planted.id)
    at.text_input(key="data_new_class").set_value("wasps")
    at.button(key="data_add_class").click().run()
    _ok(at)
    assert "wasps" in store.load_dataset(planted.id).classes
    at.selectbox(key="data_rename_from").set_value("bees")
    at.text_input(key="data_rename_to").set_value("honey bees")
    at.button(key="data_rename").click().run()
    _ok(at)
    assert store.load_dataset(planted.id).classes == ("ants", "honey bees", "wasps")

    at.selectbox(key="data_photo_class").set_value("wasps")
    at.toggle(key="data_camera_on").set_value(True).run()
    at.camera_input(key="data_camera").set_value(("shot.jpg", image_bytes(99, size=(96, 96)), "image/jpeg")).run()
    at.button(key="data_camera_add").click().run()
    _ok(at)
    ds = store.load_dataset(planted.id)
    assert sum(it.label == "wasps" for it in ds.items) == 1


def _upload_files() -> list[tuple[str, bytes, str]]:
    files = [(f"pets/{label}/{label}_{i}.jpg", image_bytes(50 * n + i), "image/jpeg")
             for n, label in enumerate(("cats", "dogs")) for i in range(3)]
    files += [("pets/dogs/../../escape.jpg", image_bytes(400), "image/jpeg"),
              ("pets/dogs/.DS_Store", b"junk", "application/octet-stream"),
              ("pets/notes.txt", b"hello", "text/plain")]
    return files


def test_folder_upload_imports_under_generated_names(home: Path) -> None:
    at = _page()
    at.file_uploader(key="data_upload_folder").set_value(_upload_files()).run()
    _ok(at)
    at.button(key="data_import_folder").click().run()
    _ok(at)
    dataset_id = at.session_state["draft_dataset_id"]
    ds = store.load_dataset(dataset_id)
    assert ds.name == "pets" and ds.classes == ("cats", "dogs") and len(ds.items) == 6
    assert all(it.file.startswith("files/") and it.original_name.startswith("pets/") for it in ds.items)
    problems = " ".join(_problems(at)["files"])
    assert "pets/dogs/../../escape.jpg" in problems and "notes.txt" in problems
    assert not (home / "escape.jpg").exists() and not list(home.rglob("escape.jpg"))
    assert at.session_state["data_upload_used"] > 0
    assert at.file_uploader(key="data_upload_folder_1")  # a fresh, empty uploader


def test_loose_files_go_to_the_chosen_class(home: Path) -> None:
    at = _page()
    files = [(f"img_{i}.jpg", image_bytes(i), "image/jpeg") for i in range(3)]
    at.file_uploader(key="data_upload_folder").set_value(files).run()
    at.text_input(key="data_upload_class").set_value("lemons")
    at.text_input(key="data_folder_name").set_value("fruit")
    at.button(key="data_import_folder").click().run()
    _ok(at)
    ds = store.load_dataset(at.session_state["draft_dataset_id"])
    assert ds.name == "fruit" and ds.classes == ("lemons",) and len(ds.items) == 3
    assert "Training is blocked" in _messages(at.error)  # one class cannot train


def _colours_zip(top: str = "") -> bytes:
    """red/ and blue/ with three PNGs each (inside `top` when given)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, label in enumerate(("red", "blue")):
            for i in range(3):
                zf.writestr(f"{top}{label}/{i}.png", image_bytes(70 * n + i, "PNG"))
    return buf.getvalue()


def _import_zip(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="data_upload_zip").set_value((name, data, "application/zip")).run()
    at.button(key="data_import_zip").click().run()


def test_zip_upload(home: Path) -> None:
    at = _page()
    _import_zip(at, "colours.zip", _colours_zip("colours/"))
    _ok(at)
    ds = store.load_dataset(at.session_state["draft_dataset_id"])
    assert ds.name == "colours" and ds.classes == ("blue", "red") and ds.source["kind"] == "zip"
    assert not [p for p in (home / "tmp").iterdir()]  # the spooled zip is gone


def test_a_bad_zip_is_refused_with_a_reason(home: Path) -> None:
    at = _page()
    at.file_uploader(key="data_upload_zip").set_value(("fake.zip", b"not a zip at all", "application/zip")).run()
    at.button(key="data_import_zip").click().run()
    _ok(at)
    assert "The zip was not imported" in _messages(at.error)
    assert store.list_datasets() == []


def test_session_upload_quota(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_STUDIO_UPLOAD_QUOTA_MB", "0.001")  # about 1 KB
    at = _page()
    at.file_uploader(key="data_upload_folder").set_value(_upload_files()).run()
    at.button(key="data_import_folder").click().run()
    _ok(at)
    assert "This session may upload" in _messages(at.error)
    assert store.list_datasets() == []


def test_user_strings_are_escaped(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "x"
    make_tree(src, {"<img src=x onerror=alert(1)>": 3, "**bold** :red[x] $y$": 3})
    ds = store.import_folder(src, "<script>alert(1)</script>", config=FAST).dataset
    at = _page(dataset_id=ds.id)
    _ok(at)
    assert at.subheader[0].value == r"\<script\>alert\(1\)\<\/script\>"
    shown = _messages(at.markdown)
    assert r"\<img src\=x onerror\=alert\(1\)\>" in shown and r"\*\*bold\*\* \:red\[x\] \$y\$" in shown
    assert not re.search(r"(?<!\\)<(img|script)", shown + _messages(at.subheader) + _messages(at.caption))


def test_import_uploads_checks_every_client_path(home: Path) -> None:
    """The core call behind the folder uploader: client paths are checked like zip entry names."""
    files = [("set/train/Ants/a.jpg", image_bytes(1)), ("set/train/ants/b.jpg", image_bytes(2)),  # case clash
             ("set/train/Ants/a.jpg", image_bytes(3)),  # same path twice
             ("/etc/passwd.jpg", image_bytes(4)), ("C:/x/evil.jpg", image_bytes(5)),
             ("set/__MACOSX/Ants/._a.jpg", b"junk")]
    files += [(f"set/train/Ants/ok_{i}.jpg", image_bytes(10 + i)) for i in range(2)]
    files += [(f"set/{split}/Bees/{split}_{i}.jpg", image_bytes(20 + 5 * n + i))
              for n, split in enumerate(("train", "val")) for i in range(2)]
    files += [("set/val/Ants/v.jpg", image_bytes(40))]
    res = store.import_uploads(files, "uploaded", config=FAST)
    ds = res.dataset
    assert ds.classes == ("Ants", "Bees") and ds.split_mode == "folders" and len(ds.items) == 8
    notes = {(p.kind, p.files[0]) for p in ds.notes}
    assert notes == {("duplicate_name", "set/train/ants/b.jpg"), ("duplicate_name", "set/train/Ants/a.jpg"),
                     ("unsafe_path", "/etc/passwd.jpg"), ("unsafe_path", "C:/x/evil.jpg")}
    assert {it.original_name for it in ds.items if it.split == "val"} == {"set/val/Bees/val_0.jpg",
                                                                          "set/val/Bees/val_1.jpg",
                                                                          "set/val/Ants/v.jpg"}
    assert not [p for p in (home / "datasets").iterdir() if p.name.startswith(".extract-")]


def test_server_folder_path_import_only_when_local(home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "on_disk"
    make_tree(src, {"cats": 3, "dogs": 3})
    at = _page()
    at.text_input(key="data_server_path").set_value(str(src)).run()
    at.button(key="data_import_path").click().run()
    _ok(at)
    ds = store.load_dataset(at.session_state["draft_dataset_id"])
    assert ds.name == "on_disk" and len(ds.items) == 6 and (src / "cats" / "img_000.jpg").exists()
    assert "6 images in 2 classes" in _messages(at.success).replace("\\", "")
    at.text_input(key="data_server_path").set_value(str(tmp_path / "missing")).run()
    at.button(key="data_import_path").click().run()
    assert "There is no folder at" in _messages(at.error)
    at.text_input(key="data_server_path").set_value("relative/path").run()
    at.button(key="data_import_path").click().run()  # not resolved against the app's own install folder
    assert "is not a full path" in _messages(at.error) and str(Path.cwd()) not in _messages(at.error)

    monkeypatch.setenv("TRANSFER_STUDIO_SERVER_PATHS", "0")  # e.g. served on a network
    at = _page()
    _ok(at)
    assert not [t for t in at.text_input if t.key == "data_server_path"]


def test_an_empty_zip_is_refused_by_its_name(home: Path) -> None:
    at = _page()
    _import_zip(at, "empty.zip", b"PK\x05\x06" + b"\0" * 18)
    _ok(at)
    shown = _messages(at.error).replace("\\", "")  # Markdown escapes
    assert "empty.zip has no photos in it" in shown and "upload-" not in shown
    assert not at.success and store.list_datasets() == []  # nothing stored, nothing chosen
    _import_zip(at, "holiday.zip", b"not a zip")
    assert "The zip was not imported: holiday.zip: this file is not a zip archive" in \
        _messages(at.error).replace("\\", "")


def test_an_old_zip_dataset_does_not_show_the_apps_own_upload_name(home: Path) -> None:
    data = _colours_zip()
    at = _page()
    _import_zip(at, "colours.zip", data)
    _ok(at)
    assert "Source: zip colours.zip." in _messages(at.caption).replace("\\", "")  # Markdown escapes
    spooled = home / "upload-2df70f82a06aa8ce.zip"  # how datasets imported before this fix name their zip
    spooled.write_bytes(data)
    old = store.import_zip(spooled, "old colours", config=FAST).dataset
    at = _page(dataset_id=old.id)
    _ok(at)
    shown = _messages(at.caption).replace("\\", "")
    assert "Source: an uploaded zip." in shown and "upload-" not in shown


def _run_on(dataset_id: str, name: str, run_id: str = "20240101-000000-aaaaaaaaaaaa") -> Path:
    """A real run folder (config + the manifest of the photos it trains on) for a stored dataset."""
    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig

    config = RunConfig("test_resnet", dataset_id, FreezeConfig("head"), TrainConfig(epochs=1), pretrained=False,
                       name=name)
    run_dir = runs.create_run(config, trainset.from_store(dataset_id))
    return run_dir.rename(run_dir.with_name(run_id))


def test_adding_a_class_to_the_sample_keeps_the_sample_for_its_runs(home: Path, sample_textures: Path) -> None:
    """The browser tour: Data → the sample → Edit classes → Add class 'sand'. The sample stays as it was (same id,
    name and classes, still listed) for the runs trained on it; the edit is the user's own new dataset."""
    sample_id = ensure_sample_dataset("textures")
    sample = store.load_dataset(sample_id)
    _run_on(sample_id, "on the sample")
    at = _page(dataset_id=sample_id)
    at.text_input(key="data_new_class").set_value("sand")
    at.button(key="data_add_class").click().run()
    _ok(at)
    mine = at.session_state["draft_dataset_id"]
    assert mine != sample_id and at.selectbox(key="data_select").value == mine
    assert store.load_dataset(mine).classes == ("brick", "grass", "gravel", "sand")
    assert store.load_dataset(sample_id) == sample and find_sample_dataset("textures") == sample_id
    offered = at.selectbox(key="data_select").options  # "Dataset to train on"
    assert len(offered) == 2 and any(o.startswith(f"{sample.name} — ") for o in offered)
    said = _messages(at.info).replace("\\", "").replace("**", "")
    assert "Sample: textures (brick, grass, gravel) stays as it was" in said and "'on the sample'" in said
    assert "Edited sample: textures (brick, grass, gravel, sand)" in said and "now chosen" in said


def test_editing_a_dataset_a_run_used_keeps_the_runs_photos(planted: store.Dataset) -> None:
    from core import runs

    run_dir = _run_on(planted.id, "ants vs bees")
    at = _page(dataset_id=planted.id)
    at.selectbox(key="data_remove_class").set_value("bees").run()
    at.checkbox(key="data_remove_confirm").check().run()
    at.button(key="data_remove").click().run()
    _ok(at)
    assert all(Path(it["path"]).is_file() for it in runs.load_dataset(run_dir)["items"])  # its results still work
    kept = store.load_dataset(planted.id)
    assert kept.classes == ("ants", "bees") and kept.name == "planted"
    copy = store.load_dataset(at.session_state["draft_dataset_id"])
    assert copy.id != planted.id and copy.name == "planted v2" and copy.classes == ("ants",)
    assert "1 run ('ants vs bees') was trained on it" in _messages(at.info).replace("\\", "")
    at.text_input(key="data_new_class").set_value("wasps")  # the new version has no run yet: edited in place
    at.button(key="data_add_class").click().run()
    _ok(at)
    assert at.session_state["draft_dataset_id"] == copy.id and store.load_dataset(copy.id).classes == ("ants", "wasps")


def _delete_panel(at: AppTest) -> str:
    return _messages(at.warning).replace("\\", "")


def test_deleting_a_dataset_names_the_runs_trained_on_it(planted: store.Dataset) -> None:
    at = _page(dataset_id=planted.id)
    assert "trained on this dataset" not in _delete_panel(at)
    assert at.checkbox(key="data_delete_confirm").label.endswith("(the originals you uploaded are not affected)")
    for k, name in enumerate(("first", "second", "third", "fourth")):
        _run_on(planted.id, name, f"2024010{k + 1}-000000-aaaaaaaaaaaa")
    at = _page(dataset_id=planted.id)
    _ok(at)
    warned = _delete_panel(at)
    assert "4 runs ('fourth', 'third', 'second' and 1 more) were trained on this dataset" in warned
    assert "their results can no longer be computed (results computed before stay" in warned
    assert "they can still be tested and exported" in warned
    assert at.checkbox(key="data_delete_confirm").label.endswith("although 4 runs were trained on it")
    at.checkbox(key="data_delete_confirm").check().run()
    at.button(key="data_delete").click().run()
    _ok(at)
    assert store.list_datasets() == []


def _claims_to_train(run_dir: Path, pid: int) -> None:
    """The run's status says it trains, and its job record names process `pid`."""
    import json

    import psutil

    from core import runs

    runs.write_status(run_dir, state="running", message="Epoch 1")
    created = psutil.Process(pid).create_time() if psutil.pid_exists(pid) else 0.0
    (run_dir / "job.json").write_text(json.dumps({"pid": pid, "create_time": created, "started": 0}))


def test_a_dataset_cannot_be_deleted_while_a_run_trains_on_it(planted: store.Dataset) -> None:
    import os

    from core import runs

    run_dir = _run_on(planted.id, "still training")
    _claims_to_train(run_dir, os.getpid())  # a live process: this test's own
    at = _page(dataset_id=planted.id)
    _ok(at)
    said = _messages(at.error).replace("\\", "")
    assert "1 run ('still training') is training on this dataset now: it cannot be deleted until it stops" in said
    assert at.checkbox(key="data_delete_confirm").disabled and at.button(key="data_delete").disabled
    runs.write_status(run_dir, state="completed", message="Done.")  # it ends: the panel lets the user go on
    at = _page(dataset_id=planted.id)
    at.checkbox(key="data_delete_confirm").check().run()
    _claims_to_train(run_dir, os.getpid())  # ... but it was started again before the click
    at.button(key="data_delete").click().run()
    _ok(at)
    assert [d.id for d in store.list_datasets()] == [planted.id], "nothing deleted under a training run"
    assert "Not deleted: 1 run ('still training') is training on this dataset now" in \
        _messages(at.error).replace("\\", "")


def test_a_run_whose_process_died_does_not_block_deleting_its_dataset(planted: store.Dataset) -> None:
    from core import runs

    run_dir = _run_on(planted.id, "died")
    _claims_to_train(run_dir, 2**22 + 12345)  # no such process
    at = _page(dataset_id=planted.id)
    _ok(at)
    assert "training on this dataset now" not in _messages(at.error)
    assert runs.read_status(run_dir)["state"] == "crashed"
    at.checkbox(key="data_delete_confirm").check().run()
    at.button(key="data_delete").click().run()
    _ok(at)
    assert store.list_datasets() == []


def test_the_data_package_counts_the_same_states_as_active_as_the_run_store() -> None:
    from core import runs
    from core.data import usage

    assert usage.ACTIVE_STATES == runs.ACTIVE_STATES
