"""A user's tour of the Runs page (table, compare, open, rename, resume, delete) and the reports hanging off it: each
test is a confusion found in a real browser, checked here without one."""

from __future__ import annotations

import shutil
from pathlib import Path

from core import jobs, runs
from core.run_table import dataset_cell, run_row
from core.settings import runs_root
from core.storage import read_json, write_json_atomic
from tests.test_results_pages import _app, _ok, trained  # noqa: F401 - `trained` is a fixture used below


def _twin(run_dir: Path, run_id: str, **meta: str) -> Path:
    """A copy of a run under another id, with its own meta.json."""
    other = runs_root() / run_id
    shutil.copytree(run_dir, other)
    write_json_atomic(other / "meta.json", meta)
    return other


def _open(at, run_id: str) -> None:
    next(s for s in at.selectbox if s.label == "Open a run").set_value(run_id).run()
    _ok(at)


def test_opening_another_run_makes_the_browser_show_its_name_note_and_an_unticked_box(trained: Path) -> None:  # noqa: F811
    """The browser kept run A's name, note and ticked box after run B was opened (a new default does not reach a
    widget the browser already shows): Save then renamed B after A."""
    write_json_atomic(trained / "meta.json", {"name": "run A", "note": "A's note"})
    other = _twin(trained, "20200101-000000-0123456789ab", name="run B", note="B's note")
    at = _app("views/runs.py").run()
    _open(at, trained.name)
    at.checkbox(key="runs_delete_confirm").check().run()
    _open(at, other.name)
    name, note = at.text_input(key="runs_name"), at.text_area(key="runs_note")
    box = at.checkbox(key="runs_delete_confirm")
    assert (name.value, note.value, box.value) == ("run B", "B's note", False)
    # set_value: the browser replaces what it shows with these values (else it keeps run A's)
    assert name.proto.set_value and note.proto.set_value and box.proto.set_value


def test_resume_opens_the_train_page_on_the_run_not_on_choose_a_model(trained: Path) -> None:  # noqa: F811
    """A user who came straight to the Runs page pressed Resume and landed on "Choose a model first." (the run
    trained on, unseen): the Train page needs the run's model and photos chosen."""
    status = read_json(trained / "status.json")
    write_json_atomic(trained / "status.json", {**status, "state": "stopped"})
    at = _app("views/runs.py").run()
    _ok(at)
    try:
        at.button(key="runs_resume").click().run()
        _ok(at)
        assert (trained / jobs.JOB_FILE).is_file()  # its worker was started
    finally:
        jobs.cancel(trained)
    assert [t.value for t in at.title] == ["4 · Train"]
    assert not any("Choose a model first" in i.value or "Choose your photos first" in i.value for i in at.info)
    config = runs.read_json_config(trained)
    assert at.session_state["draft_backbone"] == config["backbone"]
    assert at.session_state["draft_dataset_id"] == config["dataset"]
    assert at.session_state["draft_run_id"] == trained.name


def test_a_sample_is_named_as_the_data_page_names_it_never_gone_or_deleted() -> None:
    """The runs table said "(folder gone) sample:textures" and "(deleted) Sample: shapes (segmentation)" for runs
    trained on the built-in samples, which are there."""
    folder = {"kind": "folder", "path": "/somewhere/sample_data/textures"}
    assert dataset_cell("sample:textures", None, folder) == "Sample: textures (brick, grass, gravel)"
    stored = {"kind": "store", "dataset_id": "0" * 32, "name": "Sample: shapes (segmentation)"}
    assert dataset_cell("sample:segmentation", None, stored) == "Sample: shapes (segmentation)"
    assert dataset_cell("/no/such/folder", None, {}) == "(folder gone) folder"  # a real gone folder still says so


def test_a_cancelled_run_counts_the_time_it_trained(trained: Path) -> None:  # noqa: F811
    """A cancelled (or crashed, or running) run writes no total: the table said 0 seconds after an epoch of training."""
    (trained / "events.jsonl").unlink(missing_ok=True)  # (this fixture trained in-process: none)
    batch = {"step": 1, "epoch": 0, "pos": 6, "loss": 1.0}
    for t, kind, extra in ((100.0, "fit_started", {"resumed_from": None}), (105.0, "batch_ended", batch),
                           (112.0, "epoch_ended", {"epoch": 1, "val_accuracy": 1.0})):
        runs.append_event(trained, {"t": t, "type": kind, **extra})  # killed after its first epoch: no fit_ended
    status = read_json(trained / "status.json")
    status.pop("seconds", None)
    write_json_atomic(trained / "status.json", {**status, "state": "cancelled"})
    assert run_row(trained)["seconds"] == 12.0


def test_compare_says_what_each_score_measures_when_tasks_are_mixed(trained: Path) -> None:  # noqa: F811
    """Comparing a classification run with a segmentation run: the chart was titled "Validation accuracy" over an
    mIoU curve, the table's best score gave no unit ("0.065" beside "1"), pretrained read "False", and the table
    showed 10 of its 14 rows (seconds, device and note hidden in a scroll box)."""
    status = read_json(trained / "status.json")
    write_json_atomic(trained / "status.json", {**status, "best_val_accuracy": 1.0})
    seg = _twin(trained, "20000101-000000-000000000000")
    write_json_atomic(seg / "config.json", {**runs.read_json_config(trained), "task": "segmentation"})
    write_json_atomic(seg / "status.json", {**status, "best_val_accuracy": 0.065})
    at = _app("views/runs.py").run()
    _ok(at)
    at.multiselect(key="runs_compare").set_value([trained.name, seg.name]).run()
    _ok(at)
    side = next(d.value for d in at.dataframe if any(seg.name in c for c in d.value.columns))
    assert side.loc["best score"].tolist() == ["1.000 accuracy", "0.065 mIoU"]
    assert side.loc["pretrained"].tolist() == ["no", "no"]
    assert list(side.columns) == [f"tiny colours ({trained.name})", f"tiny colours ({seg.name})"]
    chart = at.get("plotly_chart")[0].proto.spec
    assert "Validation accuracy over time" not in chart and "mIoU" in chart


def test_a_run_never_named_is_not_labelled_with_its_id_twice(trained: Path) -> None:  # noqa: F811
    """A run started from the command line without --name showed "20261208-… (20261208-…)" in the pickers."""
    write_json_atomic(trained / "config.json", {**runs.read_json_config(trained), "name": ""})
    at = _app("views/runs.py").run()
    _ok(at)
    picker = next(s for s in at.selectbox if s.label == "Open a run")
    assert picker.format_func(trained.name) == trained.name
    assert at.multiselect(key="runs_compare").format_func(trained.name) == trained.name


def test_the_segmentation_report_says_when_on_what_and_its_settings_in_words(tmp_path: Path) -> None:
    """The segmentation report had no date, photos or training time, its settings were the raw config JSON
    ("train_size": 256, "lr": null …), and a one-epoch run's curve had an epoch axis of 0, 0.5, 1, 1.5, 2."""
    import re

    from core.tasks.segmentation.report import curves_figure, write_report
    from tests.test_segmentation_core import _train, make_set

    run_dir, _ = _train(tmp_path, make_set(tmp_path / "ds", n_train=4, n_val=2), epochs=1)
    write_json_atomic(run_dir / "status.json", {**read_json(run_dir / "status.json", {}), "state": "completed",
                                                "epochs_done": 1, "seconds": 12.3, "device": "cpu"})  # as the worker
    page = write_report(run_dir).read_text()
    text = re.sub(r"<[^>]+>", " ", page.split("<h2>Settings</h2>", 1)[1])
    assert '"train_size"' not in page and "null" not in text
    for words in ("epochs", "1 done of 1 planned", "learning rate", "training crops", "64×64 px", "training time",
                  "12 s", "started from", "random weights (from scratch)"):
        assert words in text, words
    assert re.search(rf"Run {run_dir.name} · trained \d{{4}}-\d\d-\d\d \d\d:\d\d on the folder ", page)
    assert curves_figure([{"epoch": 1, "val_accuracy": 0.1}]).layout.xaxis.dtick == 1


def test_the_run_opened_here_is_the_one_the_test_and_train_pages_show(trained: Path) -> None:  # noqa: F811
    """There was no way from a run to the Test page with that run (the Test page showed the newest, and a user who
    came straight to the Runs page found the Train page asking for a model)."""
    older = _twin(trained, "20000101-000000-000000000000", name="older run")
    at = _app("views/runs.py").run()
    _open(at, older.name)
    at.button(key="runs_to_test").click().run()
    _ok(at)
    assert [t.value for t in at.title] == ["5 · Test your model"]
    assert at.selectbox(key="test_run").value == older.name
    at.switch_page("views/runs.py").run()
    _ok(at)
    at.button(key="runs_to_train").click().run()
    _ok(at)
    assert [t.value for t in at.title] == ["4 · Train"]
    assert not any("Choose a model first" in i.value for i in at.info)
    assert at.session_state["draft_run_id"] == older.name


def test_a_run_still_training_says_its_results_are_of_its_best_epoch_so_far(trained: Path) -> None:  # noqa: F811
    """A running run offered "Compute results" and exports with no word that its weights still change."""
    import os

    import psutil

    status = read_json(trained / "status.json")
    write_json_atomic(trained / "status.json", {**status, "state": "running", "pid": os.getpid(),
                                                "pid_created": psutil.Process().create_time()})
    at = _app("views/runs.py").run()
    _ok(at)
    assert any("still training" in i.value and "best epoch so far" in i.value for i in at.info)
    write_json_atomic(trained / "status.json", {**status, "state": "completed"})
    at.run()
    assert not any("still training" in i.value for i in at.info)


def test_the_detection_report_says_when_and_on_what_and_a_cancelled_runs_time(tmp_path: Path) -> None:
    """Its header read only "Run … · completed" (no date, no photos), and a cancelled run's time "0 s"."""
    from core.tasks.detection.report import build_report

    run_dir = tmp_path / "20261208-035143-6c3e161052e5"
    run_dir.mkdir()
    write_json_atomic(run_dir / "config.json", {"task": "detection", "backbone": "mobilenetv2_100", "train": {},
                                                "freeze": {"preset": "all"}, "name": "boxes"})
    write_json_atomic(run_dir / "dataset.json", {"classes": ["disc"], "items": [], "dataset": "/photos/shapes",
                                                 "source": {"kind": "folder", "id": "", "name": "shapes"}})
    write_json_atomic(run_dir / "status.json", {"state": "cancelled", "created": 1796700000.0, "device": "cpu"})
    runs.append_event(run_dir, {"t": 100.0, "type": "fit_started", "resumed_from": None})
    runs.append_event(run_dir, {"t": 165.0, "type": "epoch_ended", "epoch": 1, "train_loss": 1.0, "val_accuracy": 0.1})
    page = build_report(run_dir)
    assert "trained 20" in page and "on the folder /photos/shapes" in page and "training <b>cancelled</b>" in page
    assert "<td>1 min 5 s</td>" in page.replace("<td class=\"num\">", "<td>")


def test_looking_at_a_run_of_another_task_leaves_the_sessions_run_alone(trained: Path) -> None:  # noqa: F811
    """Opening the newest run, a detection run, in a classification session made it the classification Train and
    Test pages' run: the Test page offered the detection model to classify photos."""
    det = _twin(trained, "20991231-000000-000000000000", name="boxes")
    write_json_atomic(det / "config.json", {**runs.read_json_config(trained), "task": "detection"})
    at = _app("views/runs.py").run()
    _ok(at)
    picker = next(s for s in at.selectbox if s.label == "Open a run")
    assert picker.value == det.name  # the newest is open
    assert at.session_state["draft_run_id"] != det.name if "draft_run_id" in at.session_state else True
    _open(at, trained.name)
    assert at.session_state["draft_run_id"] == trained.name
    _open(at, det.name)
    at.run()  # and it stays open on the next rerun
    assert next(s for s in at.selectbox if s.label == "Open a run").value == det.name
    assert at.session_state["draft_run_id"] == trained.name
    at.checkbox(key="runs_delete_confirm").check().run()
    at.button(key="runs_delete").click().run()
    _ok(at)
    assert not det.exists() and at.session_state["draft_run_id"] == trained.name


def test_the_report_of_a_quick_model_lists_no_epochs_batches_or_augmentation(tmp_path: Path) -> None:
    """A quick model's report said "epochs 1 done of 5 planned", "batch size 32" and the augmentations of a fine-tune
    it never ran (the Runs table leaves them empty: one fit of a linear head on cached features)."""
    import re

    from core import trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from core.report import build_report
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "data", train=3, val=2)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("head"), TrainConfig(epochs=5), pretrained=True, quick=True)
    run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
    section = build_report(run_dir).split("<h2>Training</h2>", 1)[1].split("</section>", 1)[0]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "planned" not in text and "batch size" not in text and "crop, flip" not in text
    assert "linear head" in text and "time" in text and "seed" in text


def test_a_segmentation_run_opened_from_a_classification_session_opens_its_own_test_page(home: Path) -> None:
    """Its task's pages are not in the app's navigation until the task is chosen: switching at once raised "Could not
    find page: views/segmentation_test.py"."""
    from tests.test_segmentation_core import _train, make_set

    run_dir, _ = _train(home, make_set(home / "ds", n_train=4, n_val=2), epochs=1)
    assert run_dir.parent == runs_root()
    at = _app("views/runs.py").run()
    _ok(at)
    at.button(key="runs_to_test").click().run()
    _ok(at)
    assert [t.value for t in at.title] == ["5 · Test your segmentation model"]
    assert at.session_state["draft_task"] == "segmentation" and at.session_state["draft_run_id"] == run_dir.name


def test_a_stopped_run_says_how_many_of_its_epochs_it_trained(trained: Path) -> None:  # noqa: F811
    """The table and the compare table gave only the planned epochs: a run cancelled after 1 of 4 read "4"."""
    status = read_json(trained / "status.json")
    write_json_atomic(trained / "status.json", {**status, "state": "cancelled", "epochs_done": 1})
    assert (run_row(trained)["epochs"], run_row(trained)["epochs_done"]) == (2, 1)
    at = _app("views/runs.py").run()
    _ok(at)
    at.multiselect(key="runs_compare").set_value([trained.name]).run()
    _ok(at)
    side = next(d.value for d in at.dataframe if any(trained.name in c for c in d.value.columns))
    assert side.loc["epochs"].tolist() == ["2"] and side.loc["epochs done"].tolist() == ["1"]


def test_the_classification_test_page_offers_only_classification_runs(trained: Path) -> None:  # noqa: F811
    """The Test page listed every task's runs: after the run it showed was deleted it fell back to a segmentation
    model and offered it for telling classes apart."""
    seg = _twin(trained, "20300101-000000-000000000000", name="shapes")
    write_json_atomic(seg / "config.json", {**runs.read_json_config(trained), "task": "segmentation"})
    at = _app("views/test.py").run()
    _ok(at)
    offered = at.selectbox(key="test_run").options
    assert any(trained.name in o for o in offered) and not any(seg.name in o for o in offered)
