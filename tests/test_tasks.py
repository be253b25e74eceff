"""The task seam: registry, task of a run/export folder, per-task page files, CLI dispatch."""

from __future__ import annotations

import json

import pytest

from core.tasks import get_task, list_tasks, task_of
from views.common import page_file


def test_classification_is_available_and_first():
    rows = list_tasks()
    assert rows[0].name == "classification" and rows[0].available
    assert [r.name for r in rows] == ["classification", "detection", "segmentation", "faces"]
    task = get_task("classification")
    assert task.metric == "val_accuracy" and task.has_quick


def test_unknown_task_is_a_clear_error():
    with pytest.raises(KeyError, match="Unknown or not yet available task 'tennis'"):
        get_task("tennis")


def test_task_of_reads_run_config_then_export_manifest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert task_of(run) == "classification"
    (run / "config.json").write_text(json.dumps({"task": "segmentation"}))
    assert task_of(run) == "segmentation"
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.json").write_text(json.dumps({"task": "detection"}))
    assert task_of(export) == "detection"
    (export / "manifest.json").write_text("{broken")
    assert task_of(export) == "classification"
    assert task_of(tmp_path / "missing") == "classification"


def test_page_file_prefers_the_tasks_own_view():
    assert page_file("data", "classification") == "views/data.py"
    assert page_file("data", "no_such_task") == "views/data.py"
    assert page_file("train", "no_such_task") == "views/train.py"


def test_epoch_curves_label_and_missing_train_metric():
    from core.plots import epoch_curves, extra_metrics_figure

    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": float("nan"), "val_accuracy": 0.4,
                "metrics": {"val_map": 0.2, "loss_box": 0.5}},
               {"epoch": 2, "train_loss": 0.8, "val_loss": 0.7, "train_accuracy": float("nan"), "val_accuracy": 0.6,
                "metrics": {"val_map": 0.3, "loss_box": 0.4}}]
    fig = epoch_curves(history, "accuracy", label="mAP@0.5")
    assert [t.name for t in fig.data] == ["mAP@0.5"]  # no all-NaN train trace
    detector = [{**h, "val_loss": float("nan")} for h in history]  # a detector has no validation loss
    assert [t.name for t in epoch_curves(detector, "loss").data] == ["train loss"]  # no empty legend entry
    extra = extra_metrics_figure(history)
    assert sorted(t.name for t in extra.data) == ["loss box", "val map"]


def test_reproduce_command_carries_the_tasks_own_options(tmp_path, home):
    from core import runs
    from core.config import RunConfig
    from core.export import reproduce_command

    manifest = {"task": "segmentation", "classes": ["a", "b"], "items": [], "model": {"arch": "fpn"},
                "ignore_value": 11, "source": {}}
    run_dir = runs.create_run(RunConfig("mobilenetv2_100", "/data/camvid", task="segmentation"), manifest,
                              tmp_path / "runs")
    command = reproduce_command(run_dir)
    assert "--task segmentation" in command and "--arch fpn" in command and "--ignore-index 11" in command


def test_reproduce_command_reads_flags_left_out_as_the_tasks_defaults(tmp_path, home):
    """Segmentation weighs classes by default: a default run needs no flag and no note, a run without weights
    says --no-class-weights, and both parse back to what the run used."""
    import shlex
    from dataclasses import replace

    from core import runs
    from core.cli import build_parser
    from core.config import RunConfig
    from core.export import reproduce_command

    seg = get_task("segmentation")
    assert seg.default_train().class_weights  # the measured default (BENCHMARKS.md, CamVid)
    manifest = {"task": "segmentation", "classes": ["a", "b"], "items": [], "model": {"arch": "unet"},
                "ignore_value": 11, "source": {}}
    for weights in (True, False):
        train = replace(seg.default_train(), class_weights=weights)
        run_dir = runs.create_run(RunConfig("mobilenetv2_100", "/data/camvid", seg.default_freeze(), train,
                                            task="segmentation"), manifest, tmp_path / f"runs{weights}")
        command = reproduce_command(run_dir)
        assert "#" not in command  # nothing differs from the task's defaults that the flags cannot say
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert seg.default_train().with_choices(class_weights=args.class_weights).class_weights is weights
        assert ("--no-class-weights" in command) is (not weights)
    assert build_parser().parse_args(["train", "--data", "d"]).class_weights is None  # left out: the task's


def test_home_offers_a_sample_only_where_the_task_has_one(home):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert not at.button(key="home_try_sample").disabled  # classification: the textures sample
    names = [t.name for t in list_tasks() if t.available]
    for name in names:
        at.session_state["draft_task"] = name
        at.run()
        assert not at.exception
        task = get_task(name)
        has = name == "classification" or hasattr(task, "ensure_sample")
        assert at.button(key="home_try_sample").disabled is (not has)
        if not has:
            assert any("no built-in sample" in c.value for c in at.caption)


def test_train_page_offers_only_the_extras_that_apply_to_the_task(home):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    found = {}
    for name in [t.name for t in list_tasks() if t.available]:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
        at.session_state["draft_task"] = name
        at.session_state["draft_backbone"] = "mobilenetv2_100"
        at.session_state["draft_dataset_id"] = "not-a-dataset"
        at.switch_page("views/train.py").run()
        assert not at.exception
        keys = {b.key for b in at.button} | {c.key for c in at.checkbox}
        found[name] = ("train_lr_find" in keys, "train_class_weights" in keys, "train_quick" in keys,
                       any("quick model" in c.value for c in at.caption))
    assert found["classification"] == (True, True, True, True)
    if "detection" in found:
        assert found["detection"] == (False, False, False, False)  # no quick model to point to either


def test_detection_reproduce_names_the_annotation_file(tmp_path):
    if "detection" not in [t.name for t in list_tasks() if t.available]:
        pytest.skip("no detection task")
    ann = tmp_path / "boxes.json"
    ann.write_text("{}")
    task = get_task("detection")
    assert task.reproduce_args({"source": {"kind": "folder", "annotations": str(ann)}}) == ["--annotations",
                                                                                           str(ann)]
    assert task.reproduce_args({"source": {"kind": "stored", "annotations": "x"}}) == []


def test_changing_the_task_forgets_the_old_tasks_data_choices(home):
    """The class-weights choice belongs to the old task's data: the new task starts from its own defaults."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120).run()
    at.session_state["draft_class_weights"] = False  # e.g. turned off on the classification Data page
    at.segmented_control(key="home_task").set_value("segmentation").run()
    assert not at.exception
    assert "draft_class_weights" not in at.session_state
    assert at.session_state["draft_freeze"] == json.dumps(get_task("segmentation").default_freeze().to_dict())


def test_switching_back_to_a_task_brings_back_its_data_run_and_layers(home, tmp_path):
    """Detection and back: the classification dataset, run and layer choice are there again (they were cleared)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from core.data import store
    from tests.synthetic import make_colour_folders

    ds = store.import_folder(make_colour_folders(tmp_path / "colours", train=4, val=2), "colours").dataset
    run = runs.create_run(RunConfig("test_resnet", ds.id, FreezeConfig("all"), TrainConfig(epochs=1),
                                    pretrained=False), trainset.resolve(ds.id))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    for k, v in {"dataset_id": ds.id, "run_id": run.name, "freeze": json.dumps(FreezeConfig("all").to_dict()),
                 "class_weights": False}.items():
        at.session_state[f"draft_{k}"] = v
    at.run()
    at.segmented_control(key="home_task").set_value("detection").run()
    assert not at.exception
    assert at.session_state["draft_dataset_id"] is None and at.session_state["draft_run_id"] is None
    at.segmented_control(key="home_task").set_value("classification").run()
    assert not at.exception
    assert at.session_state["draft_dataset_id"] == ds.id and at.session_state["draft_run_id"] == run.name
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "all"
    assert at.session_state["draft_class_weights"] is False
    store.delete_dataset(ds.id)  # gone meanwhile: not brought back
    at.segmented_control(key="home_task").set_value("detection").run()
    at.segmented_control(key="home_task").set_value("classification").run()
    assert at.session_state["draft_dataset_id"] is None


def test_each_task_offers_the_export_formats_its_exporter_takes():
    import importlib

    from core.export import FORMATS
    from core.tasks import export_formats

    assert export_formats(get_task("classification"), "mobilenetv2_100") == FORMATS
    faces = get_task("faces")  # the frozen face model is no network: its gallery alone
    assert export_formats(faces, "dlib_resnet_face") == ("safetensors",)
    assert export_formats(faces, "mobilenetv2_100") == FORMATS
    for task in ("detection", "segmentation"):
        exporter = importlib.import_module(f"core.tasks.{task}.export")
        assert export_formats(get_task(task), "mobilenetv2_100") == exporter.FORMATS, task
