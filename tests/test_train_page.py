"""AppTest for the Train page: what it asks for, a quick model started as a job, and the result shown."""

from __future__ import annotations

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import runs
from core.settings import runs_root
from core.tasks.classification import CLASSIFICATION
from tests.synthetic import hold_training

ROOT = Path(__file__).resolve().parent.parent


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    return at


def _with_sample() -> AppTest:
    """The Train page with MobileNetV2 and the sample textures chosen, drawn once without an error."""
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = "sample:textures"
    at.switch_page("views/train.py").run()
    assert not at.exception
    return at


def test_train_page_asks_for_data_first(home: Path) -> None:
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert any("Choose your photos first" in i.value for i in at.info)


def test_quick_model_from_the_page_trains_in_a_worker_and_shows_its_result(home: Path, sample_textures) -> None:
    at = _with_sample()
    at.button(key="train_quick").click().run()
    assert not at.exception
    run_id = at.session_state["draft_run_id"]
    run_dir = runs_root() / run_id
    end = time.time() + 240
    while time.time() < end and runs.read_status(run_dir).get("state") not in ("completed", "failed", "crashed"):
        time.sleep(0.5)
    status = runs.read_status(run_dir)
    assert status["state"] == "completed", status
    assert status["best_val_accuracy"] > 0.6  # 3 classes: chance is 0.33
    at.run()
    assert not at.exception
    assert any(m.label == "Best validation accuracy" for m in at.metric)
    assert any("Quick model ready" in s.value for s in at.success)
    waited = next(c.value for c in at.caption if "from the click to the answer" in c.value)
    assert float(waited.split(" s ")[0]) >= status["seconds"]  # the worker's start-up is counted too


def test_without_two_gpus_the_page_says_why_it_trains_on_one_device(home: Path, sample_textures) -> None:
    from core.distributed import gpu_rows, multi_gpu_note

    at = _with_sample()
    rows = gpu_rows()
    if len(rows) >= 2:
        assert at.slider(key="train_gpus").value == len(rows)
    else:
        assert any(multi_gpu_note(rows) == c.value for c in at.caption)
        assert "several GPUs needs 2 or more" in multi_gpu_note(rows)


def test_faster_epochs_option_trains_on_smaller_crops(home: Path, sample_textures) -> None:
    from core.pipeline import reduced_train_size

    at = _with_sample()
    box = at.checkbox(key="train_small_crops")
    assert box.label.endswith("160×160 crops") and reduced_train_size(224) == 160
    assert box.value, "the faster 160² crops are the default for classification (issue 9's measured winner)"
    assert at.number_input(key="train_epochs").value == CLASSIFICATION.default_train().epochs
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_dir = runs_root() / at.session_state["draft_run_id"]
    config = runs.load_config(run_dir)
    assert config.train.train_size == 160
    assert config.freeze == CLASSIFICATION.default_freeze()  # no Layers visit: the task's default preset
    assert config.name == "Fine-tune · mobilenetv2_100 · textures"  # the photos' name: runs told apart
    from core import jobs

    jobs.cancel(run_dir)


def test_a_second_start_with_the_same_choices_does_not_queue_a_twin(home: Path, sample_textures) -> None:
    """A double click on Start (or Start again after a reload) while the run trains would only repeat it."""

    at = _with_sample()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    first = runs_root() / at.session_state["draft_run_id"]
    hold_training(first)
    try:
        at.button(key="train_start").click().run()  # the second click of a double click
        assert not at.exception
        assert runs.list_runs() == [first], "no second run with the same choices"
        assert at.button(key="train_start").disabled
        assert any("already training with these very choices (shown below)" in c.value for c in at.caption)
        at.number_input(key="train_epochs").set_value(2).run()  # another choice: queueing it is the user's call
        assert not at.button(key="train_start").disabled
    finally:
        runs.write_status(first, state="cancelled")


def test_unticking_faster_epochs_trains_at_the_models_size(home: Path, sample_textures) -> None:
    at = _with_sample()
    at.checkbox(key="train_small_crops").uncheck().run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_dir = runs_root() / at.session_state["draft_run_id"]
    assert runs.load_config(run_dir).train.train_size == 0
    from core import jobs

    jobs.cancel(run_dir)


def test_crop_area_choice_reaches_the_run_and_hides_without_crops(home: Path, sample_textures) -> None:
    at = _with_sample()
    default = at.select_slider(key="train_crop_area").value
    assert default == CLASSIFICATION.default_train().crop_min_area, "the measured default is preselected"
    at.multiselect(key="train_augment").set_value(["flip", "color"]).run()
    assert not [s for s in at.select_slider if s.key == "train_crop_area"], "no crops, no crop setting"
    at.multiselect(key="train_augment").set_value(["crop", "flip"]).run()
    other = 0.75 if default != 0.75 else 0.5
    at.select_slider(key="train_crop_area").set_value(other).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_dir = runs_root() / at.session_state["draft_run_id"]
    train = runs.load_config(run_dir).train
    assert train.crop_min_area == other and train.augment == ("crop", "flip")
    from core import jobs

    jobs.cancel(run_dir)


def test_image_fit_choice_reaches_the_run(home: Path, sample_textures) -> None:
    at = _with_sample()
    radio = at.radio(key="train_image_fit")
    assert radio.value == CLASSIFICATION.default_train().image_fit, "the measured default is preselected"
    assert len(radio.options) == 4 and any("stretched" in o for o in radio.options)
    assert any(o.startswith("Let the app choose") for o in radio.options)
    other = "crop" if radio.value != "crop" else "squash"
    radio.set_value(other).run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_dir = runs_root() / at.session_state["draft_run_id"]
    assert runs.load_config(run_dir).train.image_fit == other
    from core import jobs

    jobs.cancel(run_dir)


def test_a_dataset_the_data_page_blocks_does_not_start_training(home: Path, tmp_path: Path) -> None:
    from data_fixtures import make_tree

    from core.data import store
    from core.data.validate import ValidationConfig

    make_tree(tmp_path / "src", {"ants": 8, "bees": 8, "wasps": 1})
    ds = store.import_folder(tmp_path / "src", "insects", config=ValidationConfig(workers=0)).dataset
    assert ds.report["blocking"]  # one photo of wasps: the Data page says training is blocked
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = ds.id
    at.switch_page("views/train.py").run()
    assert not at.exception
    said = [e.value for e in at.error]  # said up front, not only once Start was pressed
    assert len(said) == 1 and "cannot be trained on" in said[0] and "wasps" in said[0], said
    assert any(link.proto.label == "Fix the photos on the Data page" for link in at.get("page_link"))
    for key in ("train_start", "train_quick", "train_lr_find"):  # the buttons that would fail are off
        assert at.button(key=key).disabled, key
    assert runs.list_runs() == []  # no run was made


def test_a_new_session_shows_only_a_run_of_this_task_on_these_photos(home: Path, tmp_path: Path) -> None:
    from core import trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    colours = str(make_colour_folders(tmp_path / "colours", train=4, val=2))
    other = runs.create_run(RunConfig("test_resnet", colours, FreezeConfig("all"), TrainConfig(epochs=1),
                                      pretrained=False, name="on other photos"), trainset.resolve(colours))
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = colours
    at.session_state["draft_task"] = "detection"
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert "draft_run_id" not in at.session_state  # a classification run is not shown under detection
    at = _with_sample()  # classification, but the textures sample: the colours run is not picked either
    assert "draft_run_id" not in at.session_state
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = colours
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert at.session_state["draft_run_id"] == other.name  # this task, these photos: shown
    notes = [i.value for i in at.info if "other choices" in i.value]
    assert len(notes) == 1 and "model **test_resnet**" in notes[0] and "photos" not in notes[0]
    at.session_state["draft_dataset_id"] = "sample:textures"  # e.g. "Try it with sample data" on Home
    at.run()
    notes = [i.value for i in at.info if "other choices" in i.value]
    assert len(notes) == 1 and "photos **" in notes[0]


def test_the_settings_stay_while_the_user_visits_other_pages(home: Path) -> None:
    at = _with_sample()
    at.number_input(key="train_epochs").set_value(2).run()
    at.select_slider(key="train_batch").set_value(8).run()
    assert at.session_state["train_settings_panel"] is False  # the Settings panel starts closed
    at.session_state["train_settings_panel"] = True  # the user opens it
    at.run()
    at.switch_page("views/test.py").run()
    at.switch_page("views/layers.py").run()
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert at.number_input(key="train_epochs").value == 2 and at.select_slider(key="train_batch").value == 8
    assert at.session_state["train_settings_panel"] is True  # still open where they left it


def test_balance_classes_stays_as_the_user_set_it_across_pages(home: Path) -> None:
    at = _with_sample()
    start = at.checkbox(key="train_class_weights").value
    at.checkbox(key="train_class_weights").set_value(not start).run()
    for page in ("views/data.py", "views/train.py", "views/runs.py", "views/model.py", "views/train.py"):
        at.switch_page(page).run()
        assert not at.exception
    assert at.checkbox(key="train_class_weights").value is (not start)


def test_the_settings_come_back_after_a_timed_fragment_dropped_them(home: Path) -> None:
    """The Train page's live view reruns every second; when it fires after the user has gone to another page,
    Streamlit drops that page's widget keys (issue 10805): the settings must still come back."""
    at = _with_sample()
    at.number_input(key="train_epochs").set_value(3).run()
    at.number_input(key="train_seed").set_value(9).run()
    at.switch_page("views/data.py").run()
    for key in ("train_epochs", "train_seed"):
        del at.session_state[key]  # what the fragment's run does to keys of a page no longer shown
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert at.number_input(key="train_epochs").value == 3 and at.number_input(key="train_seed").value == 9


def test_a_run_cancelled_while_queued_offers_to_start_not_to_resume(home: Path, tmp_path: Path) -> None:
    from core import trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    colours = str(make_colour_folders(tmp_path / "colours", train=4, val=2))
    queued = runs.create_run(RunConfig("test_resnet", colours, FreezeConfig("all"), TrainConfig(epochs=1),
                                       pretrained=False, name="never ran"), trainset.resolve(colours))
    runs.write_status(queued, state="cancelled", message="Cancelled.")
    at = _app()
    at.session_state["draft_backbone"] = "test_resnet"
    at.session_state["draft_dataset_id"] = colours
    at.session_state["draft_run_id"] = queued.name
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert any("Cancelled before it started" in w.value for w in at.warning)
    assert any(c.value == "Run: **never ran**" for c in at.sidebar.caption)  # the sidebar names the run shown
    assert at.button(key="train_resume").label == "Start it"


def test_a_run_on_deleted_photos_names_them_not_their_hash(home: Path, tmp_path: Path) -> None:
    from data_fixtures import make_tree

    from core import trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from core.data import store
    from core.data.validate import ValidationConfig

    make_tree(tmp_path / "src", {"ants": 8, "bees": 8})
    ds = store.import_folder(tmp_path / "src", "insects", config=ValidationConfig(workers=0)).dataset
    run = runs.create_run(RunConfig("mobilenetv2_100", ds.id, FreezeConfig("all"), TrainConfig(epochs=1),
                                    name="on insects"), trainset.resolve(ds.id))
    store.delete_dataset(ds.id)  # (the Data page keeps datasets runs used; a run's folder may come from elsewhere)
    at = _with_sample()
    at.session_state["draft_run_id"] = run.name
    at.run()
    assert not at.exception
    notes = [i.value for i in at.info if "other choices" in i.value]
    assert len(notes) == 1 and "photos **insects** (no longer on this machine)" in notes[0], notes
    assert ds.id not in notes[0]
    (run / "dataset.json").write_text("{}")  # a manifest that no longer names them either
    at.run()
    notes = [i.value for i in at.info if "other choices" in i.value]
    assert "(photos no longer on this machine)" in notes[0] and ds.id not in notes[0], notes
    at.session_state["draft_dataset_id"] = ds.id  # the photos chosen were deleted: said, and not started
    at.run()
    assert not at.exception
    assert any("data" not in m.value and "photos no longer on this machine" in m.value for m in at.markdown)
    assert any("no longer on this machine" in e.value for e in at.error)
    assert at.button(key="train_start").disabled


def _run_on_sample(train, backbone: str = "mobilenetv2_100") -> Path:
    """A run folder (not started) on the sample textures with the settings `train`."""
    from core import trainset
    from core.config import FreezeConfig, RunConfig

    return runs.create_run(RunConfig(backbone, "sample:textures", FreezeConfig("gradual"), train, name="mine"),
                           trainset.resolve("sample:textures"))


def _new_session_showing(run_dir: Path) -> AppTest:
    """A new session (a reload, F5) whose address names the sample, MobileNetV2 and `run_dir`."""
    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = "sample:textures"
    at.session_state["draft_run_id"] = run_dir.name
    at.switch_page("views/train.py").run()
    assert not at.exception
    return at


def test_after_a_reload_the_settings_are_those_of_the_run_shown(home: Path, sample_textures) -> None:
    from core.config import TrainConfig

    defaults = CLASSIFICATION.default_train()
    mine = TrainConfig(epochs=defaults.epochs + 4, batch_size=8, seed=7, lr=0.002, augment=("crop", "flip"),
                       crop_min_area=0.5, train_size=0, image_fit="pad", class_weights=not defaults.class_weights)
    at = _new_session_showing(_run_on_sample(mine))
    assert at.number_input(key="train_epochs").value == mine.epochs
    assert at.select_slider(key="train_batch").value == 8 and at.number_input(key="train_seed").value == 7
    assert at.checkbox(key="train_own_lr").value and at.number_input(key="train_lr").value == 0.002
    assert at.multiselect(key="train_augment").value == ["crop", "flip"]
    assert at.select_slider(key="train_crop_area").value == 0.5
    assert at.checkbox(key="train_small_crops").value is False and at.radio(key="train_image_fit").value == "pad"
    assert at.checkbox(key="train_class_weights").value is mine.class_weights
    at.number_input(key="train_epochs").set_value(2).run()  # the user's own change afterwards is theirs
    at.switch_page("views/data.py").run()
    at.switch_page("views/train.py").run()
    assert at.number_input(key="train_epochs").value == 2


def test_after_a_reload_a_run_on_other_photos_leaves_the_defaults(home: Path, sample_textures, tmp_path) -> None:
    from core.config import TrainConfig

    defaults = CLASSIFICATION.default_train()
    run_dir = _run_on_sample(TrainConfig(epochs=defaults.epochs + 4, seed=7))
    config = runs.read_json_config(run_dir)
    (run_dir / "config.json").write_text(json.dumps({**config, "dataset": str(tmp_path)}))  # trained on other photos
    at = _new_session_showing(run_dir)
    assert at.number_input(key="train_epochs").value == defaults.epochs
    assert at.number_input(key="train_seed").value == defaults.seed


def test_batch_sizes_offered_fit_the_task(home: Path, tmp_path: Path) -> None:
    from core.tasks import get_task

    at = _app()
    at.session_state["draft_task"] = "detection"
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = str(tmp_path)  # no boxes there: the page says so, settings still shown
    at.switch_page("views/train.py").run()
    assert not at.exception
    batch = at.select_slider(key="train_batch")
    default = get_task("detection").default_train().batch_size
    offered = [int(o) for o in batch.options]  # AppTest gives a select slider's options as text
    assert batch.value == default and max(offered) == 8 * default < 128  # 128 large photos: out of memory
    classification = _with_sample().select_slider(key="train_batch")
    assert max(int(o) for o in classification.options) == 128
    assert classification.value == CLASSIFICATION.default_train().batch_size


def test_the_time_measured_on_the_layers_page_is_said_before_start(home: Path, sample_textures) -> None:
    at = _with_sample()
    assert not [c for c in at.caption if c.value.startswith("About ")], "nothing measured yet: no guess"
    at.switch_page("views/layers.py").run()
    at.button(key="estimate_run").click().run()  # a few real training steps in their own process
    assert not at.exception
    per_epoch = next(m.value for m in at.metric if m.label == "Time per epoch")
    at.switch_page("views/train.py").run()
    at.number_input(key="train_epochs").set_value(2).run()
    said = next(c.value for c in at.caption if c.value.startswith("About "))
    assert "for 2 epochs on this machine" in said and "as measured on the Layers page" in said
    assert f"{per_epoch} per epoch" in said  # the per-epoch time the Layers page showed
    at.checkbox(key="train_small_crops").uncheck().run()  # full-size crops were not measured: no figure
    assert not [c for c in at.caption if c.value.startswith("About ")]
