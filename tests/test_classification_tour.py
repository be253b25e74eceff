"""What a browser tour of the image-classification flow found, as AppTests: the dataset box after an edit, a picture
filed under two classes, the Model table's columns, the Layers table and preset line, the Train page's settings
after a reload, a quick model's scores and the time a run takes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from data_fixtures import make_tree
from streamlit.testing.v1 import AppTest

from core import runs, trainset
from core.catalog import prediction_speed
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.data import store
from core.data.validate import ValidationConfig
from views.common import KEPT_STORE

ROOT = Path(__file__).resolve().parent.parent
FAST = ValidationConfig(workers=0)


def _page(path: str, **draft: object) -> AppTest:
    """`path` drawn once in a new session whose draft holds `draft`."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in draft.items():
        at.session_state[f"draft_{key}"] = value
    at.switch_page(path).run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture()
def ants_bees(home: Path, tmp_path: Path) -> store.Dataset:
    """ants/bees, 8 photos each, with one ants photo also filed under bees."""
    src = tmp_path / "ants_bees"
    make_tree(src, {"ants": 8, "bees": 8})
    (src / "bees" / "same_as_an_ant.jpg").write_bytes((src / "ants" / "img_000.jpg").read_bytes())
    return store.import_folder(src, "ants and bees", config=FAST).dataset


# ------------------------------------------------------------------------------------------------ Data page

def test_the_closed_dataset_box_shows_an_edit_made_in_place(ants_bees: store.Dataset) -> None:
    """The browser kept the box's old text ("… 17 images, 2 classes") after an edit in place: the value is sent
    again when, and only when, the chosen dataset's label changed."""
    at = _page("views/data.py", dataset_id=ants_bees.id)
    at.run()  # a plain rerun: nothing sent back
    assert not at.selectbox(key="data_select").proto.set_value
    at.text_input(key="data_new_class").set_value("wasps")
    at.button(key="data_add_class").click().run()
    _ok(at)
    box = at.selectbox(key="data_select")
    assert box.value == ants_bees.id  # edited in place: no run used it
    assert box.proto.set_value, "the new label must reach the closed box"
    assert any(o.startswith("ants and bees — 17 images, 3 classes") for o in box.options)
    at.run()
    assert not at.selectbox(key="data_select").proto.set_value  # not on every rerun (a pick in flight stays)


def test_a_picture_under_two_classes_is_kept_in_the_class_chosen(ants_bees: store.Dataset) -> None:
    """The report said "keep the one with the right class and drop the others", and the page had no way to drop
    one photo. Each class of the picture now has a button that keeps it there."""
    at = _page("views/data.py", dataset_id=ants_bees.id)
    problems = next(df.value for df in at.dataframe if "details" in df.value.columns)
    assert "two classes" in set(problems["reason"])
    keep_ants, keep_bees = at.button(key="data_keep_0_0"), at.button(key="data_keep_0_1")
    assert keep_ants.label == "Keep in ants" and keep_bees.label == "Keep in bees"
    keep_ants.click().run()
    _ok(at)
    ds = store.load_dataset(at.session_state["draft_dataset_id"])
    assert ds.id == ants_bees.id  # no run used it: edited in place
    counts = {c: sum(it.label == c for it in ds.items) for c in ds.classes}
    assert counts == {"ants": 8, "bees": 8}  # the copy under bees went, the ant stayed
    assert not [p for p in store.dataset_report(ds).problems if p.kind == "conflicting_label"]
    assert any("Dropped 1 copy filed outside" in s.value for s in at.success)
    assert not [b for b in at.button if (b.key or "").startswith("data_keep_")]


# ------------------------------------------------------------------------------------------------ Model page

def test_the_model_table_shows_the_latency_without_scrolling(home: Path) -> None:
    """The latency was the last of nine columns, cut off at the table's right edge on a 1400-px window."""
    at = _page("views/model.py")
    columns = list(at.dataframe[0].value.columns)  # the page's one table (AppTest gives tables no key)
    assert columns[:2] == ["title", "name"] and columns.index("latency_ms") < columns.index("weights")
    assert columns.index("latency_ms") <= 5


def test_the_prediction_speed_says_when_it_was_measured_on_a_busy_processor() -> None:
    assert prediction_speed(13.7) == "About 73 images per second for predictions on this machine."
    busy = prediction_speed(287.0, busy=True)
    assert busy.startswith("About 3 images per second") and "busy" in busy
    assert prediction_speed(1500.0).startswith("About 1 image per second")


# ------------------------------------------------------------------------------------------------ Layers page

def test_the_layers_table_reads_as_words_and_gradual_says_which_groups_stay_frozen(home: Path) -> None:
    at = _page("views/layers.py", backbone="mobilenetv2_100")
    at.radio(key="freeze_preset").set_value("gradual").run()
    _ok(at)
    kept = at.number_input(key="freeze_keep_frozen").value
    assert kept > 0
    said = " ".join(c.value for c in at.caption)
    assert f"the first {kept} groups stay frozen" in said and "unfreeze everything" not in said
    table = next(df.value for df in at.dataframe if "Parameters" in df.value.columns)
    assert isinstance(table, pd.DataFrame) and "Layer group" in table.columns and "index" not in table.columns
    at.number_input(key="freeze_keep_frozen").set_value(0).run()
    assert any("then unfreeze the rest with lower" in c.value for c in at.caption)  # none kept frozen: the plain line


# ------------------------------------------------------------------------------------------------ Train page

def _sample_run(train: TrainConfig, quick: bool = False) -> Path:
    return runs.create_run(RunConfig("mobilenetv2_100", "sample:textures", FreezeConfig("gradual"), train,
                                     quick=quick, name="tour"), trainset.resolve("sample:textures"))


def test_settings_taken_from_the_run_after_a_reload_outlast_a_visit_to_another_page(home: Path,
                                                                                     sample_textures) -> None:
    """After F5 the settings come from the run shown; the Settings panel stays closed, so the browser never drew
    (and never reported) those widgets, and the next page left them behind: back at Train they were the defaults
    while the run shown had trained with others."""
    run_dir = _sample_run(TrainConfig(epochs=7, seed=3))
    at = _page("views/train.py", backbone="mobilenetv2_100", dataset_id="sample:textures", run_id=run_dir.name)
    assert at.number_input(key="train_epochs").value == 7
    # the browser reports only widgets it drew; the timed live view drops the others' keys (Streamlit issue 10805):
    # the run's settings must sit in the plain copy every page restores them from, as the user's own do
    kept = at.session_state[KEPT_STORE]
    assert kept.get("train_epochs") == 7 and kept.get("train_seed") == 3
    at.switch_page("views/layers.py").run()
    at.switch_page("views/train.py").run()
    _ok(at)
    assert at.number_input(key="train_epochs").value == 7 and at.number_input(key="train_seed").value == 3


def test_a_quick_model_shows_its_scores_in_a_table_not_two_one_dot_charts(home: Path, sample_textures) -> None:
    run_dir = _sample_run(TrainConfig(), quick=True)
    t = time.time() - 5
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"t": t, "type": "epoch_ended", "epoch": 1, "train_loss": 0.09, "train_accuracy": 0.97,
                             "val_loss": 0.2, "val_accuracy": 1.0, "lr": 0.0, "seconds": 1.8}) + "\n")
    runs.write_status(run_dir, state="completed", message="Quick model ready in 1.8 s.", progress=1.0,
                      best_val_accuracy=1.0, ended=t + 1)
    at = _page("views/train.py", backbone="mobilenetv2_100", dataset_id="sample:textures", run_id=run_dir.name)
    scores = next(df.value for df in at.dataframe if "photos" in df.value.columns)
    assert list(scores["photos"]) == ["training", "validation"]
    assert list(scores["accuracy"]) == ["97.0%", "100.0%"] and list(scores["loss"]) == ["0.090", "0.200"]
    assert not at.get("plotly_chart"), "no loss/accuracy curves for a single point"


def test_the_time_said_before_start_counts_the_seconds_around_the_epochs(home: Path, sample_textures) -> None:
    """"About 1.7 s for 2 epochs" and then 20 s from the click to the end: the fixed costs are named."""
    from core.device import plan_device
    from core.measure import ESTIMATE_FILE, _estimate_key
    from core.settings import cache_root
    from core.tasks import freeze_defaults, get_task
    from core.zoo import get_spec

    task = get_task("classification")
    freeze = freeze_defaults(task)
    size = task.default_train_size(get_spec("mobilenetv2_100").input_size)
    row = {"model": "mobilenetv2_100", "freeze": freeze.preset, "batch_size": 32, "device": "cpu",
           "precision": "float32", "seconds_per_step": 0.4, "images_per_second": 80.0, "peak_memory_mb": 1000.0,
           "model_memory_mb": 50.0, "n_images": 120, "seconds_per_epoch": 1.6, "trainable_params": 1,
           "frozen_params": 1, "note": "measured"}
    (cache_root() / ESTIMATE_FILE).write_text(json.dumps({_estimate_key("mobilenetv2_100", freeze, 32, 2, size,
                                                                        plan_device()): row}))
    at = _page("views/train.py", backbone="mobilenetv2_100", dataset_id="sample:textures",
               freeze=json.dumps(freeze.to_dict()))
    said = next(c.value for c in at.caption if c.value.startswith("About "))
    assert "as measured on the Layers page" in said and "starting the training process" in said
