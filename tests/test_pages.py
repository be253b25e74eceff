"""AppTest: the pages render without exception, and the selection carries from page to page."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_home_renders_steps_and_sample_button() -> None:
    at = _app().run()
    _ok(at)
    assert at.title[0].value == "Transfer Studio"
    assert at.button(key="home_try_sample")


def test_layers_without_a_model_points_to_the_model_page() -> None:
    at = _app()
    at.switch_page("views/layers.py").run()
    _ok(at)
    assert any("Choose a model first" in i.value for i in at.info)
    # the page stopped early (st.stop), and the sidebar still shows the device and the draft
    captions = [c.value for c in at.sidebar.caption]
    assert any("Model: not chosen yet" in c for c in captions) and any("CPU" in c or "GPU" in c for c in captions)


def test_model_choice_carries_to_the_layers_page() -> None:
    at = _app()
    at.switch_page("views/model.py").run()
    _ok(at)
    assert any("mobilenetv2_100" in o for o in at.selectbox(key="model_select").options)
    shown = at.selectbox(key="model_select").value  # the model shown is in use at once (sidebar, next steps)
    assert at.session_state["draft_backbone"] == shown
    assert f"Model: **{shown}**" in [c.value for c in at.sidebar.caption]
    at.selectbox(key="model_select").set_value("tf_efficientnet_lite0").run()
    _ok(at)
    assert at.session_state["draft_backbone"] == "tf_efficientnet_lite0"
    assert any(m.value == "224 px" for m in at.metric)
    at.switch_page("views/layers.py").run()
    _ok(at)
    assert any("tf_efficientnet_lite0" in md.value for md in at.markdown)
    from core.tasks.classification import CLASSIFICATION

    radio = at.radio(key="freeze_preset")
    assert radio.value == CLASSIFICATION.default_freeze().preset  # nothing chosen yet: the task's default
    assert radio.format_func(radio.value).endswith("recommended")
    at.radio(key="freeze_preset").set_value("head").run()
    frozen = next(m for m in at.metric if m.label == "Frozen parameters")
    assert frozen.value != "0"
    assert "freeze_train_bn" in {c.key for c in at.checkbox}
    at.radio(key="freeze_preset").set_value("all").run()
    _ok(at)
    assert "freeze_train_bn" not in {c.key for c in at.checkbox}  # nothing frozen: no choice about frozen groups
    assert next(m for m in at.metric if m.label == "Frozen parameters").value == "0"
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "all"
    at.radio(key="freeze_preset").set_value("last-N").run()
    at.slider(key="freeze_last_n").set_value(3).run()
    _ok(at)
    assert json.loads(at.session_state["draft_freeze"])["preset"] == "last-3"
    at.radio(key="freeze_preset").set_value("gradual").run()
    at.number_input(key="freeze_keep_frozen").set_value(3).run()
    _ok(at)
    assert json.loads(at.session_state["draft_freeze"])["keep_frozen"] == 3
    assert next(m for m in at.metric if m.label == "Frozen parameters").value != "0"  # the first groups stay
    assert any("all but the first 3 groups" in c.value for c in at.caption)


def test_try_sample_data_sets_a_working_draft() -> None:
    at = _app().run()
    at.button(key="home_try_sample").click().run()
    _ok(at)
    assert at.session_state["draft_backbone"] == "mobilenetv2_100"
    assert len(at.session_state["draft_dataset_id"]) == 32  # the sample, imported into the store


def _reloaded(at: AppTest, page: str = "views/train.py") -> AppTest:
    """A new session (F5) opened on the address `at` shows now, drawn once without an error."""
    reloaded = _app()
    reloaded.query_params.update(dict(at.query_params))
    reloaded.switch_page(page).run()
    _ok(reloaded)
    return reloaded


def test_the_draft_is_kept_in_the_address_so_a_reload_comes_back_to_it() -> None:
    at = _app().run()
    at.button(key="home_try_sample").click().run()
    at.switch_page("views/model.py").run()
    at.selectbox(key="model_select").set_value("tf_efficientnet_lite0").run()
    _ok(at)
    address = dict(at.query_params)
    assert address["backbone"] == "tf_efficientnet_lite0"
    assert address["dataset_id"] == at.session_state["draft_dataset_id"]
    reloaded = _reloaded(at)
    assert reloaded.session_state["draft_backbone"] == "tf_efficientnet_lite0"
    assert reloaded.session_state["draft_dataset_id"] == address["dataset_id"]
    assert not any("Choose a model first" in i.value for i in reloaded.info)


def test_the_layer_choice_survives_a_reload() -> None:
    import json

    at = _app().run()
    at.button(key="home_try_sample").click().run()
    at.switch_page("views/layers.py").run()
    at.radio(key="freeze_preset").set_value("all").run()
    _ok(at)
    assert json.loads(at.query_params["freeze"]) == {"preset": "all"}  # only what differs from the defaults
    reloaded = _reloaded(at)
    assert json.loads(reloaded.session_state["draft_freeze"])["preset"] == "all"
    assert "Model **mobilenetv2_100**, layers **Everything**" in " ".join(m.value for m in reloaded.markdown)
    at.radio(key="freeze_preset").set_value("custom").run()  # a per-group choice survives too (it used to fall
    group = at.multiselect(key="freeze_groups").options[-1]  # back to the preset without a word)
    at.multiselect(key="freeze_groups").select(group).run()
    _ok(at)
    reloaded = _reloaded(at)
    reloaded.switch_page("views/layers.py").run()
    _ok(reloaded)
    assert reloaded.radio(key="freeze_preset").value == "custom"
    assert reloaded.multiselect(key="freeze_groups").value == [group]


def test_ids_in_the_address_are_checked_before_they_become_the_draft() -> None:
    at = _app()
    at.query_params.update({"task": "no_such_task", "backbone": "no_such_model", "dataset_id": "0" * 32,
                            "run_id": "../../../etc", "other": "x",
                            "freeze": '{"preset":"custom","groups":["../x"],"keep_frozen":"3"}'})
    at.switch_page("views/layers.py").run()
    _ok(at)
    assert any("Choose a model first" in i.value for i in at.info)
    for key in ("task", "backbone", "dataset_id", "run_id", "freeze"):
        assert f"draft_{key}" not in at.session_state
    assert dict(at.query_params) == {}  # nothing unchecked stays in the address


def test_the_layers_page_measures_the_run_the_train_page_starts(home: Path) -> None:
    from core import zoo
    from core.tasks.classification import CLASSIFICATION

    at = _app()
    at.session_state["draft_backbone"] = "test_resnet"
    at.switch_page("views/layers.py").run()
    at.select_slider(key="estimate_batch").set_value(4)
    at.number_input(key="estimate_images").set_value(40)
    at.button(key="estimate_run").click().run()
    _ok(at)
    size = CLASSIFICATION.default_train_size(zoo.get_spec("test_resnet").input_size)  # "Faster epochs", the default
    assert any(f"{size}×{size} training crops" in c.value for c in at.caption)
    assert any(m.label == "Time per epoch" for m in at.metric)


def test_the_layers_page_counts_the_head_for_the_chosen_photos(home: Path, sample_textures) -> None:
    from core import zoo

    at = _app()
    at.session_state["draft_backbone"] = "mobilenetv2_100"
    at.session_state["draft_dataset_id"] = "sample:textures"  # brick, grass, gravel
    at.switch_page("views/layers.py").run()
    at.radio(key="freeze_preset").set_value("gradual").run()
    _ok(at)
    head = sum(p.numel() for p in zoo.create_model("mobilenetv2_100", num_classes=3, pretrained=False)
               .get_classifier().parameters())
    assert head == 1280 * 3 + 3
    assert any(f"Phase 1 trains {head:,} parameters" in c.value for c in at.caption), [c.value for c in at.caption]


def test_home_describes_the_chosen_tasks_steps() -> None:
    from core.tasks import freeze_defaults, get_task

    at = _app()
    at.session_state["draft_task"] = "detection"
    at.session_state["draft_freeze"] = json.dumps(freeze_defaults(get_task("detection")).to_dict())  # its default
    at.run()
    _ok(at)
    assert any("Bring photos with boxes" in m.value for m in at.markdown)
    assert not any("one per class" in m.value for m in at.markdown)
    links = [link.proto.label for link in at.get("page_link")]
    assert links.count("done ✓ — change") == 0  # neither Layers (the task's default, not a choice) nor others
    at.session_state["draft_freeze"] = json.dumps({**json.loads(at.session_state["draft_freeze"]), "preset": "all"})
    at.run()
    assert [link.proto.label for link in at.get("page_link")].count("done ✓ — change") == 1  # a choice made


def test_the_model_pages_next_step_is_data_until_photos_are_chosen(home: Path) -> None:
    at = _app()
    at.switch_page("views/model.py").run()
    at.button(key="model_use").click().run()
    _ok(at)
    assert at.title[0].value.startswith("2 ·")  # the Data page, not Layers (step 3)
    at = _app()
    at.session_state["draft_dataset_id"] = "sample:textures"
    at.switch_page("views/model.py").run()
    at.button(key="model_use").click().run()
    _ok(at)
    assert at.title[0].value.startswith("3 ·")


def test_home_says_a_trained_step_leads_to_its_run(home: Path, tmp_path: Path) -> None:
    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    colours = str(make_colour_folders(tmp_path / "colours", train=4, val=2))
    run = runs.create_run(RunConfig("test_resnet", colours, FreezeConfig("all"), TrainConfig(epochs=1),
                                    pretrained=False), trainset.resolve(colours))
    at = _app()
    at.session_state["draft_run_id"] = run.name
    at.run()
    _ok(at)
    labels = [link.proto.label for link in at.get("page_link")]
    assert "done ✓ — see the run" in labels  # the Train step: a run is looked at, not changed


def test_model_page_says_which_speeds_were_measured_while_busy_and_measures_again() -> None:
    import json

    from core import measure
    from core.device import plan_device
    from core.settings import cache_root

    at = _app()
    at.switch_page("views/model.py").run()
    _ok(at)
    path = cache_root() / measure.LATENCY_FILE
    cache = json.loads(path.read_text())
    key = measure._latency_key("mobilenetv2_100", plan_device())
    cache[key] = {"ms": 999.0, "busy": True}
    path.write_text(json.dumps(cache))
    at.run()
    _ok(at)
    if measure.measured_while_busy("mobilenetv2_100"):  # not measured again at once: the processor is busy now
        assert any("Measured while the processor was busy" in c.value and "MobileNetV2" in c.value
                   for c in at.caption)
    at.button(key="model_measure_again").click().run()
    _ok(at)
    assert measure.cached_latency("mobilenetv2_100") != 999.0  # measured anew
    assert any("per second for predictions" in c.value for c in at.caption)


def test_a_layer_choice_in_the_address_is_checked() -> None:
    import json

    from views.common import _freeze_from_url

    ok = _freeze_from_url(json.dumps({"preset": "custom", "groups": ["blocks.5", "head"]}))
    assert ok and json.loads(ok)["groups"] == ["blocks.5", "head"]
    for bad in ({"preset": "custom", "groups": "blocks.5"}, {"preset": "custom", "groups": [1]},
                {"preset": "custom", "groups": ["x" * 500]}, {"preset": "custom", "groups": [""]},
                {"preset": "all", "extra": 1}, {"preset": "nonsense"}):
        assert _freeze_from_url(json.dumps(bad)) is None, bad


def test_a_deleted_dataset_is_not_shown_by_its_hash() -> None:
    from views.common import dataset_label

    assert dataset_label("0123456789abcdef0123456789abcdef") == "(deleted photos)"
    assert dataset_label("/data/photos/ants_and_bees") == "ants\\_and\\_bees"


def test_the_sidebar_names_the_task_of_a_run_from_another_task(home: Path, tmp_path: Path) -> None:
    """After a reload and a task switch the sidebar showed a segmentation run under object detection as if it were
    the detection run (a browser tour saw it); a run of another task is now named with its task."""
    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    folder = make_colour_folders(tmp_path / "colours", train=2, val=1)
    config = RunConfig("test_resnet", str(folder), FreezeConfig("all"), TrainConfig(epochs=1), pretrained=False,
                       name="masks run", task="segmentation")
    run_dir = runs.create_run(config, trainset.resolve(str(folder)))
    at = _app()
    at.session_state["draft_task"] = "detection"
    at.session_state["draft_run_id"] = run_dir.name
    at.run()
    _ok(at)
    assert "Run: **masks run** (Segmentation)" in [c.value for c in at.sidebar.caption]
    at.session_state["draft_task"] = "segmentation"
    at.run()
    assert "Run: **masks run**" in [c.value for c in at.sidebar.caption]  # its own task: no note
