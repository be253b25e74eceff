"""AppTest for the face pages: People (enrol, photos without a face by name, delete a person), Train (the two model
paths), Test (identify an uploaded photo, verify) and the Results tab (threshold trade-off, evaluation)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from streamlit.testing.v1 import AppTest

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.data.store import import_folder, set_task
from core.recorder import RunRecorder
from core.settings import runs_root
from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parent.parent


def _app(page: str, **draft) -> AppTest:
    """The step's page (views/<step>.py); with the task 'faces' chosen the router shows views/faces_<step>.py."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["draft_task"] = "faces"
    for key, value in draft.items():
        at.session_state[f"draft_{key}"] = value
    at.switch_page(page)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "success", "info", "warning", "error")
                    for e in getattr(at, kind)).replace("\\", "")  # esc() escapes markdown characters


def test_train_page_without_people_points_to_the_people_page(home: Path) -> None:
    at = _app("views/train.py")
    at.run()
    _ok(at)
    assert "Enrol some people first" in _texts(at)


@pytest.mark.weights
def test_people_page_shows_faces_names_photos_without_one_and_deletes_a_person(home: Path, tmp_path: Path) -> None:
    from skimage import data

    folder = tmp_path / "team"
    (folder / "eileen").mkdir(parents=True)
    (folder / "nobody").mkdir()
    astro = Image.fromarray(data.astronaut()).resize((256, 256))
    astro.save(folder / "eileen" / "eileen_1.png")
    ImageOps.mirror(astro).save(folder / "eileen" / "eileen_2.png")
    Image.fromarray(data.brick()).resize((128, 128)).convert("RGB").save(folder / "nobody" / "wall.png")
    ds = import_folder(folder, "Team").dataset
    set_task(ds.id, "faces")

    at = _app("views/data.py", dataset_id=ds.id)
    at.run()
    _ok(at)
    assert [m.value for m in at.metric] == ["2", "2", "1"]
    assert "wall.png" in _texts(at) and "no face found" in _texts(at)
    assert "**eileen** — 2 photos with a face" in _texts(at)  # shown with their aligned crops

    at.selectbox(key="faces_delete_person").set_value("nobody")
    at.checkbox(key="faces_delete_confirm").check()
    at.run()
    at.button(key="faces_delete").click()
    at.run()
    _ok(at)
    assert "Removed 1 photos" in _texts(at)
    assert [m.value for m in at.metric][0] == "1"


@pytest.fixture()
def face_run(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A frozen dlib run on 2 LFW people (4 photos each) and a probe folder with a stranger."""
    return make_face_run(tmp_path)


def make_face_run(tmp_path: Path) -> tuple[Path, Path]:
    """The `face_run` fixture's run and probe folder (the data root is the test's `home`)."""
    from core.tasks.faces.data import resolve
    from core.tasks.faces.train import fit

    src = shared_dataset("lfw_faces")
    people = sorted(p.name for p in src.iterdir() if p.is_dir())
    enrol, probe = tmp_path / "enrol", tmp_path / "probe"
    for i, person in enumerate(people[:3]):
        photos = sorted((src / person).iterdir())
        (probe / person).mkdir(parents=True)
        shutil.copy(photos[10], probe / person / photos[10].name)
        if i < 2:
            (enrol / person).mkdir(parents=True)
            for f in photos[:4]:
                shutil.copy(f, enrol / person / f.name)
    manifest = resolve(str(enrol))
    cfg = RunConfig("dlib_resnet_face", str(enrol), FreezeConfig("all"), TrainConfig(), task="faces",
                    name="tiny faces")
    run_dir = runs.create_run(cfg, manifest, runs_root())
    assert fit(run_dir, [RunRecorder(run_dir)]).state == "completed"
    return run_dir, probe


@pytest.mark.weights
@pytest.mark.datasets
def test_test_page_boxes_and_names_an_uploaded_photo_and_verifies(face_run) -> None:
    run_dir, probe = face_run
    person = sorted(p.name for p in probe.iterdir())[0]
    photo = next((probe / person).iterdir()).read_bytes()
    at = _app("views/test.py", run_id=run_dir.name)
    at.run()
    _ok(at)
    at.file_uploader(key="faces_test_files").set_value([("probe.jpg", photo, "image/jpeg")])
    at.run()
    _ok(at)
    assert f"**{person}** · score" in _texts(at)
    assert "**probe.jpg** — 1 face, " in _texts(at)
    assert "2 people enrolled, their photos alone cannot show how strangers score" in _texts(at)  # how it was chosen
    at.file_uploader(key="faces_verify_a").set_value([("a.jpg", photo, "image/jpeg")])
    buf = io.BytesIO()
    ImageOps.mirror(Image.open(io.BytesIO(photo))).save(buf, "JPEG")
    at.file_uploader(key="faces_verify_b").set_value([("b.jpg", buf.getvalue(), "image/jpeg")])
    at.run()
    _ok(at)
    assert "Probably the same person" in _texts(at)
    at.session_state["draft_dataset_id"] = runs.load_config(run_dir).dataset  # the photos the run enrolled
    at.session_state["draft_backbone"] = "mobilenetv2_100"  # the fine-tune choice beside the face model
    at.switch_page("views/faces_train.py").run()
    _ok(at)
    sidebar = [c.value for c in at.sidebar.caption]  # the frozen face model is chosen (the radio's first choice)
    assert "Model: **dlib_resnet_face** (face model, frozen)" in sidebar
    assert not any(c.startswith("Layers:") for c in sidebar)
    at.radio(key="faces_path").set_value("finetune").run()
    sidebar = [c.value for c in at.sidebar.caption]
    assert "Model: **dlib_resnet_face** (face model, frozen)" not in sidebar and any(c.startswith("Layers:")
                                                                                  for c in sidebar)
    at.radio(key="faces_path").set_value("face").run()
    assert "other people's faces scored by this face model" in _texts(at)  # the Train page says it too


@pytest.mark.weights
@pytest.mark.datasets
def test_results_tab_shows_the_trade_off_and_evaluates_a_folder(face_run) -> None:
    run_dir, probe = face_run
    at = _app("views/runs.py", run_id=run_dir.name)
    at.run()
    _ok(at)
    assert "Threshold" in [m.label for m in at.metric]
    assert at.radio(key="runs_export_fmt").options == ["safetensors"]  # ONNX / TorchScript always failed for dlib
    reproduce = next(c.value for c in at.get("code") if "transfer-studio train" in c.value)
    assert "--gallery prototype --target-far 0.01" in reproduce
    # 2 people: the reference strangers set the threshold, so their estimate is shown, not the few simulated ones
    estimate = next(m for m in at.metric if m.label == "Strangers accepted (estimated)")
    assert estimate.value == "1.0%"
    at.text_input(key="faces_eval_folder").set_value(str(probe))
    at.run()
    at.button(key="faces_eval_go").click()
    at.run()
    _ok(at)
    labels = [m.label for m in at.metric]
    assert "Strangers answered 'unknown'" in labels
    before = runs.read_status(run_dir)
    at.select_slider(key="faces_results_far").set_value(0.1)
    at.run()
    at.button(key="faces_results_retarget").click()
    at.run()
    _ok(at)
    from core.storage import read_json

    assert read_json(run_dir / "gallery.json")["target_far"] == 0.1 and before["state"] == "completed"
    assert "New threshold" in _texts(at) and "estimated from the reference strangers" in _texts(at)  # after its rerun
    assert read_json(run_dir / "gallery.json")["calibration"]["target_far"] == 0.1


def test_train_page_choices_stay_while_the_user_visits_other_pages(home: Path, tmp_path: Path) -> None:
    from core.tasks.faces.gallery import KINDS
    from core.tasks.faces.threshold import TARGET_FARS

    at = _app("views/train.py", dataset_id=str(tmp_path), backbone="mobilenetv2_100")
    at.run()
    _ok(at)
    at.radio(key="faces_path").set_value("finetune").run()
    gallery = [k for k in KINDS if k != at.radio(key="faces_gallery").value][0]
    far = [f for f in TARGET_FARS if f != at.select_slider(key="faces_far").value][0]
    at.radio(key="faces_gallery").set_value(gallery).run()
    at.select_slider(key="faces_far").set_value(far).run()
    at.number_input(key="faces_epochs").set_value(3).run()
    for page in ("views/faces_data.py", "views/layers.py", "views/faces_train.py"):
        at.switch_page(page).run()
        _ok(at)
    assert at.radio(key="faces_path").value == "finetune"
    at.session_state["draft_backbone"] = "tf_efficientnet_lite0"  # another backbone chosen on the Model page
    at.switch_page("views/model.py").run()
    at.switch_page("views/faces_train.py").run()
    _ok(at)
    assert at.radio(key="faces_path").value == "finetune"
    assert at.session_state["draft_faces_model"] == "tf_efficientnet_lite0"
    assert (at.radio(key="faces_gallery").value, at.select_slider(key="faces_far").value) == (gallery, far)
    assert at.number_input(key="faces_epochs").value == 3
