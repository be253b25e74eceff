"""AppTest for the Runs (results, export, manage) and Test pages, on a tiny trained run."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import engine, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.settings import runs_root
from tests.data_fixtures import IPHONE_PHOTO
from tests.synthetic import COLOURS, make_colour_folders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def trained(home: Path, tmp_path: Path) -> Path:
    data = make_colour_folders(tmp_path / "data", train=6, val=3)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("all"),
                    TrainConfig(epochs=2, batch_size=6, precision="fp32", device="cpu"), pretrained=False,
                    name="tiny colours")
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), runs_root())
    engine.fit(run_dir)
    return run_dir


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.switch_page(page)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _png(colour: str) -> bytes:
    img = np.full((48, 48, 3), COLOURS[colour], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_runs_page_without_runs_points_to_training(home: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    assert any("No runs yet" in i.value for i in at.info)


def test_results_export_and_rename(trained: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    assert at.button(key="runs_evaluate").label == "Compute results"
    at.button(key="runs_evaluate").click().run()
    _ok(at)
    assert (trained / "evaluation.json").exists()
    assert at.button(key="runs_evaluate").label == "Recompute"  # at once, not after a reload
    labels = [m.label for m in at.metric]
    assert "Accuracy (validation)" in labels and "Macro F1 (validation)" in labels
    at.button(key="runs_export").click().run()
    _ok(at)
    manifest = json.loads((trained / "exports" / "model" / "manifest.json").read_text())
    assert manifest["classes"] == ["blue", "green", "red"]
    assert any("checked" in s.value for s in at.success)
    at.text_input(key="runs_name").set_value("renamed run").run()
    at.button(key="runs_save_meta").click().run()
    _ok(at)
    assert json.loads((trained / "meta.json").read_text())["name"] == "renamed run"


def test_two_runs_with_the_same_name_compare_side_by_side(trained: Path) -> None:
    twin = trained.parent / runs.new_run_id()
    shutil.copytree(trained, twin)  # the same name ("tiny colours"), as two runs of one recipe have
    at = _app("views/runs.py").run()
    _ok(at)
    at.multiselect(key="runs_compare").set_value([trained.name, twin.name]).run()
    _ok(at)  # used to fail: duplicate column names
    labels = [f"tiny colours ({trained.name})", f"tiny colours ({twin.name})"]
    side = next(d.value for d in at.dataframe if sorted(d.value.columns) == sorted(labels))  # a column per run
    assert side.loc["lr"].tolist() == ["auto", "auto"] and side.loc["epochs"].tolist() == ["2", "2"]
    at.session_state["draft_run_id"] = twin.name
    at.run()
    at.text_input(key="runs_name").set_value("the twin").run()
    at.button(key="runs_save_meta").click().run()  # renamed while compared
    _ok(at)
    box = next(m for m in at.multiselect if m.label.startswith("Compare runs"))
    assert box.key != "runs_compare" and box.value == [trained.name, twin.name]  # drawn anew, the same runs
    assert f"the twin ({twin.name})" in box.options  # the chip shows the new name
    config = json.loads((twin / "config.json").read_text())
    (twin / "config.json").write_text(json.dumps({**config, "quick": True}))  # a quick model has no epochs
    at.run()
    side = next(d.value for d in at.dataframe if f"the twin ({twin.name})" in d.value.columns)
    full, quick = f"tiny colours ({trained.name})", f"the twin ({twin.name})"
    assert side.loc["epochs", full] == "2" and side.loc["batch", full] == "6"  # not "2.0" beside a quick model
    assert side.loc["epochs", quick] == ""


def test_test_page_predicts_uploaded_photos_and_reports_bad_files(trained: Path) -> None:
    at = _app("views/test.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()
    _ok(at)
    at.toggle(key="test_gradcam").set_value(False)
    at.file_uploader(key="test_files").set_value([("red.png", _png("red"), "image/png"),
                                                  ("broken.jpg", b"not an image", "image/jpeg")]).run()
    _ok(at)
    assert any("ms for this photo" in c.value for c in at.caption)
    assert any("broken.jpg" in e.value or "cannot be read" in e.value for e in at.error)


def test_report_button_writes_a_self_contained_report(trained: Path) -> None:
    at = _app("views/runs.py").run()
    _ok(at)
    at.button(key="runs_report").click().run()
    _ok(at)
    html = (trained / "report.html").read_text()
    assert "<html" in html.lower() and "https://" not in html
    assert any(b.label == "Download report.html" for b in at.get("download_button"))


def _results_without_photos(run_dir: Path) -> dict:
    """What evaluation.json held when a run was evaluated after its photos were deleted: no photos, no numbers."""
    import torch

    from core.evaluate import evaluate_probs

    classes = runs.load_dataset(run_dir)["classes"]
    block = evaluate_probs(torch.zeros(0, len(classes)), torch.zeros(0, dtype=torch.long), classes, [], "val")
    return {"version": 1, "run_id": run_dir.name, "classes": classes, "splits": {"val": block},
            "primary_split": "val", "unknown_threshold": {"threshold": None, "curve": []}, "learning_curve": None}


def test_a_run_whose_photos_are_gone_still_opens_and_says_why(trained: Path) -> None:
    saved = _results_without_photos(trained)
    (trained / "evaluation.json").write_text(json.dumps(saved))  # saved by an older version: it used to crash
    shutil.rmtree(runs.load_config(trained).dataset)  # the photos the run was trained on are deleted
    at = _app("views/runs.py").run()
    _ok(at)
    assert any("hold no numbers" in i.value for i in at.info)
    assert at.button(key="runs_delete")  # the Manage tab is reachable
    at.button(key="runs_evaluate").click().run()
    _ok(at)
    refusal = next(e.value for e in at.error if "no longer on this machine" in e.value)
    assert "can still be tested" in refusal and "the results below are the ones computed before" in refusal
    assert json.loads((trained / "evaluation.json").read_text()) == saved  # nothing empty was saved over it


def test_test_page_names_the_uploaded_export_and_says_what_it_can_load(home: Path) -> None:
    import hashlib
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # what Runs & export gives for the format ONNX
        for name, data in (("model.onnx", b"onnx"), ("manifest.json", b"{}"), ("export.json", b"{}")):
            zf.writestr(name, data)
    at = _app("views/test.py").run()
    _ok(at)
    at.radio(key="test_source").set_value("An exported model (.zip)").run()
    assert any("ONNX and TorchScript exports are for running the model outside" in c.value for c in at.caption)
    at.file_uploader(key="test_export_zip").set_value(("my cats.zip", buf.getvalue(), "application/zip")).run()
    _ok(at)
    shown = "\n".join(e.value for e in at.error).replace("\\", "")  # Markdown escapes
    assert "my cats.zip is an ONNX export" in shown and "outside this app" in shown and "safetensors" in shown
    stored = hashlib.sha256(buf.getvalue()).hexdigest()[:16]  # the app's own name for its copy of the upload
    assert stored not in shown


def test_compare_counts_a_resumed_runs_seconds_from_its_first_start(home: Path, tmp_path: Path) -> None:
    from core.events import BatchEnded
    from core.recorder import RunRecorder

    data = make_colour_folders(tmp_path / "data", train=6, val=3)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("all"),
                    TrainConfig(epochs=2, batch_size=6, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), runs_root())
    batches: list[BatchEnded] = []
    engine.fit(run_dir, [lambda e: batches.append(e) if isinstance(e, BatchEnded) else None, RunRecorder(run_dir)],
               should_stop=lambda: len(batches) >= 3)  # Stop after the first epoch, then Resume
    engine.fit(run_dir, [RunRecorder(run_dir)])
    at = _app("views/runs.py").run()
    _ok(at)
    at.multiselect(key="runs_compare").set_value([run_dir.name]).run()
    _ok(at)
    chart = next(c for c in at.get("plotly_chart") if "Validation accuracy over time" in c.proto.spec)
    xs = json.loads(chart.proto.spec)["data"][0]["x"]
    assert len(xs) == 2 and 0 < xs[0] < xs[1]  # the first epoch was at -seconds: counted from the resumed start


def test_a_quick_model_shows_no_epochs_batch_or_lr_in_the_runs_table(trained: Path) -> None:
    from dataclasses import replace

    cfg = runs.load_config(trained)
    quick = runs.create_run(replace(cfg, quick=True, name="quick one"), runs.load_dataset(trained), runs_root())
    at = _app("views/runs.py").run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "epochs" in d.value.columns).set_index("run")
    assert table.loc[trained.name, "epochs"] == 2 and table.loc[trained.name, "lr"] == "auto"
    assert table.loc[quick.name, ["epochs", "batch"]].isna().all()  # one pass over cached features
    assert table.loc[quick.name, "lr"] == ""  # a text column: None was shown as the word "None"


def test_a_threshold_chosen_after_the_test_page_loaded_the_model_applies_at_once(trained: Path) -> None:
    from core.evaluate import evaluate_run, set_threshold

    evaluate_run(trained, with_learning_curve=False)
    at = _app("views/test.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()  # the model is loaded (and kept) with no threshold: none was chosen
    _ok(at)
    assert not any("not sure" in c.value for c in at.caption)
    set_threshold(trained, 0.99)  # "Use this threshold" on the Runs page
    at.run()
    _ok(at)
    assert any("Answers below 99% confidence" in c.value for c in at.caption)


def test_label_errors_say_which_photos_and_fix_the_photo_of_that_split(home: Path, tmp_path: Path) -> None:
    """Validation and training candidates in one list: each row names its photos' split, and the fixes reach the
    photos of the rows marked."""
    from core.data import store
    from core.data.validate import ValidationConfig

    ds = store.import_folder(make_colour_folders(tmp_path / "data", train=4, val=2), "colours",
                             config=ValidationConfig(workers=0)).dataset
    cfg = RunConfig("test_resnet", ds.id, FreezeConfig("all"),
                    TrainConfig(epochs=1, batch_size=6, precision="fp32", device="cpu"), pretrained=False)
    run_dir = runs.create_run(cfg, trainset.resolve(ds.id), runs_root())
    engine.fit(run_dir)
    at = _app("views/runs.py").run()
    at.button(key="runs_evaluate").click().run()
    _ok(at)
    saved = json.loads((run_dir / "evaluation.json").read_text())
    val_name, train_name = "val/red/red_0.png", "train/red/red_1.png"
    saved["splits"]["val"]["label_issues"] = [{"name": val_name, "label": "red", "suggested": "blue",
                                               "reason": "blue at 97 %"}]
    saved["learning_curve"] = {**(saved.get("learning_curve") or {}),
                               "train_label_issues": [{"name": train_name, "label": "red", "suggested": "green",
                                                       "reason": "green at 95 %"}]}
    (run_dir / "evaluation.json").write_text(json.dumps(saved))
    at = _app("views/runs.py").run()
    _ok(at)
    table = at.data_editor(key="res_issues").value
    assert table["file"].tolist() == [val_name, train_name] and table["photos"].tolist() == ["validation", "training"]
    at.session_state["res_issues"] = {"edited_rows": {0: {"relabel": True}, 1: {"drop": True}}, "added_rows": [],
                                      "deleted_rows": []}
    at.run()
    at.button(key="res_apply_fixes").click().run()
    _ok(at)
    new_id = at.session_state["draft_dataset_id"]
    assert new_id != ds.id  # this run was trained on the dataset: the fixes went into a new version, now chosen
    left = {it.original_name: it.label for it in store.load_dataset(new_id).items}
    assert left[val_name] == "blue" and train_name not in left
    kept = {it.original_name: it.label for it in store.load_dataset(ds.id).items}
    assert kept[val_name] == "red" and train_name in kept  # the run keeps the photos it was trained on
    assert all(Path(it["path"]).exists() for it in runs.load_dataset(run_dir)["items"])
    assert any("a new version of the dataset" in s.value for s in at.success)


def test_test_page_answers_the_same_photo_dropped_twice_and_an_iphone_photo(trained: Path) -> None:
    """The same photo twice used to stop the page (two charts with one key); a HEIC (an iPhone's default) was
    refused by the uploader with a bare "image/heif files are not allowed", then as a format the app cannot open."""
    at = _app("views/test.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()
    at.toggle(key="test_gradcam").set_value(False)
    broken = IPHONE_PHOTO.read_bytes()[:600]
    at.file_uploader(key="test_files").set_value([("red.png", _png("red"), "image/png"),
                                                  ("red.png", _png("red"), "image/png"),
                                                  ("IMG_0001.HEIC", IPHONE_PHOTO.read_bytes(), "image/heic"),
                                                  ("IMG_0002.HEIC", broken, "image/heic")]).run()
    _ok(at)
    assert sum("ms for this photo" in c.value for c in at.caption) == 3  # both reds and the iPhone photo
    assert any(m.value == r"**IMG\_0002\.HEIC**" for m in at.markdown)  # the broken one named
    assert [e.value for e in at.error] == ["This file cannot be read: corrupt HEIC file"]


def test_test_page_does_not_classify_and_explain_again_when_a_setting_moves(trained: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every click (a toggle, the top-k slider) used to classify and explain every photo again: 40 s for 30 photos
    with the heat-maps on."""
    import core.gradcam
    from core.inference import Predictor

    calls = {"predict": 0, "explain": 0}
    predict, explain = Predictor.predict, core.gradcam.explain

    def counted_predict(self, *args, **kwargs):
        calls["predict"] += 1
        return predict(self, *args, **kwargs)

    def counted_explain(*args, **kwargs):
        calls["explain"] += 1
        return explain(*args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", counted_predict)
    monkeypatch.setattr(core.gradcam, "explain", counted_explain)
    at = _app("views/test.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()
    at.file_uploader(key="test_files").set_value([("red.png", _png("red"), "image/png"),
                                                  ("blue.png", _png("blue"), "image/png")]).run()
    _ok(at)
    assert calls == {"predict": 1, "explain": 2}
    at.slider(key="test_top_k").set_value(1).run()
    at.toggle(key="test_gradcam").set_value(False).run()
    at.toggle(key="test_gradcam").set_value(True).run()
    _ok(at)
    assert calls == {"predict": 1, "explain": 2}
    charts = [c for c in at.get("plotly_chart")]
    assert charts and all(len(json.loads(c.proto.spec)["data"][0]["y"]) == 1 for c in charts)  # top 1 shown


def test_export_tab_says_an_export_made_before_the_threshold_is_out_of_date(trained: Path) -> None:
    """After "Use this threshold" the tab kept offering the earlier download, whose files always answer."""
    from core.evaluate import evaluate_run, set_threshold
    from core.export import export_run

    evaluate_run(trained, with_learning_curve=False)
    export_run(trained, "safetensors", trained / "exports" / "model", n_check=2)
    at = _app("views/runs.py").run()
    _ok(at)
    assert not any("out of date" in w.value for w in at.warning)
    assert any("The zip holds every format exported for these weights (safetensors)" in c.value for c in at.caption)
    assert any("python predict_example.py photo.jpg --format safetensors" in m.value for m in at.markdown)
    set_threshold(trained, 0.9)
    at.run()
    _ok(at)
    assert any("This export is out of date" in w.value and "below 90" in w.value for w in at.warning)


def test_compare_uses_the_tables_words_and_the_chosen_order_and_a_gone_folder_is_named(trained: Path) -> None:
    twin = trained.parent / runs.new_run_id()
    shutil.copytree(trained, twin)
    shutil.rmtree(runs.load_config(trained).dataset)  # the folder both runs read, deleted since
    at = _app("views/runs.py").run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "dataset" in d.value.columns)
    assert table["dataset"].str.startswith("(folder gone) ").all()
    at.multiselect(key="runs_compare").set_value([twin.name, trained.name]).run()
    _ok(at)
    side = next(d.value for d in at.dataframe if f"tiny colours ({twin.name})" in d.value.columns)
    assert list(side.columns) == [f"tiny colours ({twin.name})", f"tiny colours ({trained.name})"]  # as chosen
    assert list(side.index[:4]) == ["task", "date", "status", "best score"]  # the score in sight, as in the table


def test_the_run_opened_follows_a_run_chosen_elsewhere_and_the_users_own_pick(trained: Path) -> None:
    other = trained.parent / "20000101-000000-000000000000"  # older than any run made now: listed after it
    shutil.copytree(trained, other)
    at = _app("views/runs.py").run()
    _ok(at)
    picker = next(s for s in at.selectbox if s.label == "Open a run")
    assert picker.value == trained.name
    at.session_state["draft_run_id"] = other.name  # e.g. the Train or Test page chose it
    at.run()
    _ok(at)
    assert next(s for s in at.selectbox if s.label == "Open a run").value == other.name
    assert at.session_state["draft_run_id"] == other.name
    next(s for s in at.selectbox if s.label == "Open a run").set_value(trained.name).run()  # the user's pick
    _ok(at)
    assert at.session_state["draft_run_id"] == trained.name
    assert next(s for s in at.selectbox if s.label == "Open a run").value == trained.name


def test_the_reproduce_command_says_which_stored_dataset_its_id_names(trained: Path, tmp_path: Path) -> None:
    from core.data import store

    data = make_colour_folders(tmp_path / "colours", train=6, val=3)
    dataset_id = store.import_folder(data, "my colours").dataset.id
    config = json.loads((trained / "config.json").read_text())
    (trained / "config.json").write_text(json.dumps({**config, "dataset": dataset_id}))
    at = _app("views/runs.py")
    at.session_state["draft_run_id"] = trained.name
    at.run()
    _ok(at)
    assert any(f"--data {dataset_id}" in c.value for c in at.code)
    said = " ".join(c.value for c in at.caption).replace("\\", "")
    assert f"`{dataset_id}` is the dataset **my colours** in this app's store" in said
