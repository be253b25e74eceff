"""What a browser tour of the face pages found: each test fails on the code before its fix.

People page: the folder-path box showed the Train page's model choice ("face"), a second set enrolled stayed hidden
behind "Enrol a new set", files left out of an "Add photos" were not named, photos were named with the dropped
folder twice. Train page: the sidebar said "Model: not chosen yet" before the first run, the threshold shown was the
last epoch's (not the saved model's), a run on other people was shown without a word, a reload forgot the run's
settings. Test page: trying a model while another trained made the Train page lose that run; labels on the photo
were unreadable; verify did not say which face of a group photo it compared. Exports were "out of date" at once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.data.store import import_folder, set_task
from core.settings import runs_root
from core.tasks.faces.data import dropped_folder_name, scan_people
from core.tasks.faces.draw import draw_answers, label_size
from core.tasks.faces.enrol import FacePhoto, shown_name
from core.tasks.faces.gallery import KINDS
from tests.synthetic import hold_training
from tests.test_faces_pages import _app, _ok, _texts, make_face_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def face_run(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """test_faces_pages' run: a frozen dlib run on 2 LFW people and a probe folder with a stranger."""
    return make_face_run(tmp_path)


def _plain_photos(folder: Path, people: dict[str, int]) -> Path:
    """`folder`/<person>/<n>.png: small plain photos (no face; detection on them is quick)."""
    for i, (person, n) in enumerate(people.items()):
        (folder / person).mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (64, 64), (40 * i + 20, 10 * j + 30, 90)).save(folder / person / f"{j}.png")
    return folder


def _sidebar(at: AppTest) -> list[str]:
    return [c.value for c in at.sidebar.caption]


# --- People page ---------------------------------------------------------------------------------------------------

def test_folder_path_box_is_not_the_train_pages_model_choice(home: Path, tmp_path: Path) -> None:
    at = _app("views/train.py", dataset_id=str(tmp_path), backbone="mobilenetv2_100")
    at.run()
    at.radio(key="faces_path").set_value("finetune").run()
    at.switch_page("views/faces_data.py").run()
    _ok(at)
    assert at.text_input(key="faces_folder_path").value == ""  # it showed "finetune" (the same widget key)
    at.text_input(key="faces_folder_path").set_value(str(tmp_path / "team")).run()
    at.switch_page("views/faces_train.py").run()
    _ok(at)
    assert at.radio(key="faces_path").value == "finetune"  # the typed path had replaced the model choice


@pytest.mark.weights
def test_a_second_set_enrolled_is_shown_and_left_out_files_are_named(home: Path, tmp_path: Path) -> None:
    first = import_folder(_plain_photos(tmp_path / "first", {"ann": 2, "bob": 2}), "First").dataset
    set_task(first.id, "faces")
    second = _plain_photos(tmp_path / "second", {"cleo": 2, "dan": 2})
    at = _app("views/data.py", dataset_id=first.id)
    at.run()
    _ok(at)
    at.selectbox(key="faces_dataset").set_value("__new__").run()
    at.text_input(key="faces_folder_path").set_value(str(second)).run()
    at.button(key="faces_import_path").click().run()
    _ok(at)
    assert "Enrolled 4 photos of 2 people" in _texts(at)
    chosen = at.selectbox(key="faces_dataset").value
    assert chosen not in ("__new__", first.id)  # the new set is shown, not the enrol form again
    assert [m.value for m in at.metric][0] == "2" and "**cleo** — 0 photos with a face" in _texts(at)

    gen = at.session_state["faces_upload_gen"]
    at.selectbox(key="faces_add_person").set_value("cleo")
    at.file_uploader(key=f"faces_add_files_{gen}").set_value([("broken.jpg", b"\xff\xd8\xff not a photo", "image/jpeg"),
                                                             ("ok.png", _png(), "image/png")])
    at.run()
    at.button(key="faces_add_files_go").click().run()
    _ok(at)
    assert "Added 1 photo to cleo; not added: broken.jpg (" in _texts(at)  # it said "Added 1 photo(s)", no name


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def test_dropped_folder_names_the_set() -> None:
    assert dropped_folder_name(["team/ann/1.jpg", "team/bob/2.jpg"]) == "team"
    assert dropped_folder_name(["ann/1.jpg", "bob/2.jpg"]) == "People"  # person folders dropped one by one
    assert dropped_folder_name(["a/ann/1.jpg", "b/bob/2.jpg"]) == "People"
    assert dropped_folder_name([]) == "People"


def test_photo_names_show_the_person_once() -> None:
    photo = FacePhoto("teamcopy/Ann_Lee/Ann_Lee_0002.jpg", "Ann_Lee", "/x/1.jpg", "0" * 16, "ok")
    assert shown_name(photo) == "Ann_Lee/Ann_Lee_0002.jpg"  # was "Ann_Lee/teamcopy/Ann_Lee/Ann_Lee_0002.jpg"
    assert shown_name(FacePhoto("a.jpg", "Ann", "/x/a.jpg", "0" * 16, "ok")) == "Ann/a.jpg"


def test_a_folder_read_in_place_takes_every_photo_type_the_app_decodes(tmp_path: Path) -> None:
    for person in ("ann", "bob"):
        (tmp_path / person).mkdir()
        for name in ("a.heic", "b.avif", "c.jfif"):
            (tmp_path / person / name).write_bytes(b"")
    people, notes = scan_people(tmp_path)
    assert {p: len(f) for p, f in people.items()} == {"ann": 3, "bob": 3} and not notes


# --- Train page ----------------------------------------------------------------------------------------------------

def test_sidebar_names_the_model_chosen_before_any_run(home: Path, tmp_path: Path) -> None:
    at = _app("views/train.py", dataset_id=str(tmp_path))
    at.run()
    _ok(at)
    assert "Model: **dlib_resnet_face** (face model, frozen)" in _sidebar(at)  # was "Model: not chosen yet"
    at.radio(key="faces_path").set_value("finetune").run()
    assert "Model: **mobilenetv2_100**" in _sidebar(at)  # the default backbone is the one fine-tuned


def test_sidebar_names_the_face_model_before_the_train_page_is_visited(home: Path) -> None:
    """After a reload on Home or People the sidebar said "Model: not chosen yet" and "Layers: Head only", though the
    faces task starts with the frozen face model, which has no layers to choose."""
    for page in ("views/home.py", "views/data.py"):
        at = _app(page)
        at.run()
        _ok(at)
        side = " ".join(_sidebar(at))
        assert "Model: **dlib_resnet_face** (face model, frozen)" in side and "Layers:" not in side, page


def _started_from_the_train_page(tmp_path: Path, people: str) -> tuple[AppTest, Path]:
    """(the Faces Train page, the run its Start made) for two people stored as the set `people`."""
    team = import_folder(_plain_photos(tmp_path / "team", {"ann": 2, "bob": 2}), people).dataset
    set_task(team.id, "faces")
    at = _app("views/train.py", dataset_id=team.id)
    at.run()
    at.button(key="faces_train_start").click().run()
    _ok(at)
    return at, runs_root() / at.session_state["draft_run_id"]


@pytest.mark.weights
def test_a_run_is_named_after_the_people_it_enrols(home: Path, tmp_path: Path) -> None:
    """Every faces run was called "Face model (frozen) · Faces": runs on other people could not be told apart."""
    from core import jobs

    at, run_dir = _started_from_the_train_page(tmp_path, "Team Blue")
    try:
        assert runs.display_name(run_dir) == "Face model (frozen) · Team Blue"
    finally:
        jobs.cancel(run_dir)


def test_a_second_start_with_the_same_choices_does_not_enrol_twice(home: Path, tmp_path: Path) -> None:
    """Start stayed enabled while the run shown trained, so a double click queued a second, identical run."""
    at, first = _started_from_the_train_page(tmp_path, "Team Red")
    hold_training(first)
    try:
        at.button(key="faces_train_start").click().run()  # the second click of a double click
        _ok(at)
        assert runs.list_runs() == [first] and at.button(key="faces_train_start").disabled
        assert any("already enrolling these people with these very choices" in c.value for c in at.caption)
        at.radio(key="faces_gallery").set_value(next(k for k in KINDS if k != "prototype")).run()
        assert not at.button(key="faces_train_start").disabled  # another gallery: a run of its own
    finally:
        runs.write_status(first, state="cancelled")


def test_home_describes_the_face_steps_in_their_own_words(home: Path) -> None:
    """Home described the faces steps as any classifier's ("Choose which layers to freeze", "Watch it learn")."""
    at = _app("views/home.py")
    at.run()
    _ok(at)
    words = _texts(at)
    assert "Enrol the people" in words and "answer 'unknown'" in words and "Watch it learn" not in words


@pytest.mark.weights
@pytest.mark.datasets
def test_train_page_shows_the_saved_threshold_the_runs_settings_and_other_people(face_run, tmp_path: Path) -> None:
    from core.tasks.faces.threshold import retarget

    run_dir, _ = face_run
    new = retarget(run_dir, 0.1)  # chosen again on the Runs page: the saved model's threshold changes
    manifest = json.loads((run_dir / "dataset.json").read_text())
    manifest["faces"] = {"gallery": "nearest", "target_far": 0.1}
    (run_dir / "dataset.json").write_text(json.dumps(manifest))
    at = _app("views/train.py", dataset_id=runs.load_config(run_dir).dataset, run_id=run_dir.name)
    at.run()
    _ok(at)
    threshold = next(m.value for m in at.metric if m.label == "'Unknown' threshold")
    assert threshold == f"{new['threshold']:.3f}"  # it showed the threshold the run had when it ended
    assert (at.radio(key="faces_gallery").value, at.select_slider(key="faces_far").value) == ("nearest", 0.1)
    assert not any("was made with" in i.value for i in at.info)

    other = _app("views/train.py", dataset_id=str(tmp_path), run_id=run_dir.name)  # other people chosen
    other.run()
    _ok(other)
    assert any("The run below was made with other people" in i.value for i in other.info)


# --- Test page -----------------------------------------------------------------------------------------------------

@pytest.mark.weights
@pytest.mark.datasets
def test_test_page_leaves_the_run_in_training_to_the_train_page(face_run) -> None:
    run_dir, probe = face_run
    config = RunConfig("mobilenetv2_100", runs.load_config(run_dir).dataset, FreezeConfig("head"),
                       TrainConfig(epochs=1), task="faces", name="still training")
    training = runs.create_run(config, runs.load_dataset(run_dir), runs_root())
    runs.write_status(training, state="running", message="Epoch 1")
    at = _app("views/test.py", run_id=training.name)
    at.run()
    _ok(at)
    assert at.session_state["draft_run_id"] == training.name  # it became the ready model: the Train page lost it
    assert any("still training" in i.value for i in at.info)
    assert at.selectbox(key="faces_test_run").value == run_dir.name

    person = sorted(p.name for p in probe.iterdir())[0]
    photo = next((probe / person).iterdir()).read_bytes()
    at.file_uploader(key="faces_test_files").set_value([("probe.jpg", photo, "image/jpeg"),
                                                       ("broken.jpg", b"\xff\xd8\xff broken", "image/jpeg")])
    at.run()
    _ok(at)
    assert "**probe.jpg** — 1 face, " in _texts(at)
    assert any("broken.jpg: this file could not be opened as a photo" in e.value.replace("\\", "") for e in at.error)
    at.selectbox(key="faces_test_run").set_value(run_dir.name).run()  # the user picks: now it is the draft
    assert at.session_state["draft_run_id"] == training.name  # unchanged: the same model was picked again
    runs.write_status(training, state="completed")
    at.switch_page("views/faces_test.py").run()
    assert at.session_state["draft_run_id"] == run_dir.name  # nothing trains any more: the model shown is chosen


def test_labels_drawn_on_a_photo_are_numbered_and_readable() -> None:
    img = Image.new("RGB", (1600, 1000), (128, 128, 128))
    answers = [{"box": [200, 300, 500, 700], "label": "Ann", "score": 0.97},
               {"box": [900, 300, 1200, 700], "label": "unknown", "score": 0.5}]
    out = np.asarray(draw_answers(img, answers))
    band = out[300 - label_size(img.size):300, 200:260]  # the label above the first box: filled green
    green = (np.abs(band.astype(int) - (0x16, 0xA3, 0x4A)).sum(-1) < 30).mean()
    assert label_size(img.size) >= 40 and green > 0.4  # the old label was 11 px text, unfilled
    assert (np.abs(out[299, 900:960].astype(int) - (0xDC, 0x26, 0x26)).sum(-1) < 30).mean() > 0.4  # "unknown": red


def test_verify_says_which_face_of_each_photo_it_compared() -> None:
    from core.tasks.faces import gallery as gal
    from core.tasks.faces.detect import WholeImageDetector
    from core.tasks.faces.predict import Recognizer

    class Same:
        """An embedder that gives every face the same vector."""

        name, dim = "same", 4

        def embed(self, img, faces, crops):  # noqa: ANN001, ANN201, ARG002 - the embedder interface
            return np.tile(np.array([1.0, 0, 0, 0], np.float32), (len(faces), 1))

    g = gal.build(["ann", "bob"], np.eye(4, dtype=np.float32)[:2], ["ann", "bob"])
    rec = Recognizer(g, {"threshold": 0.5}, Same(), WholeImageDetector())
    out = rec.verify(Image.new("RGB", (80, 60)), Image.new("RGB", (40, 50)))
    assert out["same"] and out["boxes"] == [[0.0, 0.0, 80.0, 60.0], [0.0, 0.0, 40.0, 50.0]]
    assert out["n_faces"] == [1, 1]


# --- Runs page: export ---------------------------------------------------------------------------------------------

@pytest.mark.weights
@pytest.mark.datasets
def test_a_faces_export_is_up_to_date_when_made(face_run) -> None:
    from core.export import out_of_date
    from core.tasks.faces.export import export_run

    run_dir, _ = face_run
    record = export_run(run_dir, "safetensors")
    assert record["ok"] and out_of_date(record["folder"], run_dir) == []  # it said "the weights changed since"
    at = _app("views/runs.py", run_id=run_dir.name)
    at.run()
    _ok(at)
    checked = [s.value for s in at.success if s.value.startswith("safetensors: checked")]
    assert checked == ["safetensors: checked — the gallery (2 people, " + checked[0].split("people, ")[1]]
    assert "PyTorch" not in checked[0] and "bit-exact and gives the same answers" in checked[0]  # no network here
    from core.tasks.faces.threshold import retarget

    new = retarget(run_dir, 0.1)  # a stricter false-accept rate chosen on the Runs page after the export
    assert out_of_date(record["folder"], run_dir) == [
        f"its 'unknown' threshold is {record_threshold(record):.3f}, but the run now uses {new['threshold']:.3f} "
        "(chosen again since)"]


def record_threshold(record: dict) -> float:
    return json.loads((Path(record["folder"]) / "manifest.json").read_text())["threshold"]


def test_the_accuracy_chart_does_not_call_held_back_rank1_a_training_accuracy() -> None:
    """The faces chart's grey curve said "train accuracy": it is rank-1 on the held-back photos."""
    from core.plots import epoch_curves

    history = [{"epoch": e, "train_accuracy": 0.5 + e / 10, "val_accuracy": 0.4 + e / 10} for e in (1, 2)]
    fig = epoch_curves(history, "accuracy", [], label="named correctly", train_label="closest person right (rank-1)")
    assert [t.name for t in fig.data] == ["closest person right (rank-1)", "named correctly"]


def test_a_model_that_names_nobody_says_what_to_do() -> None:
    """A short fine-tune showed "0.0 % named correctly" and nothing else: the user took the model for broken."""
    from core.tasks.faces.threshold import all_unknown_hint

    hint = all_unknown_hint(0.0, 0.5, "completed")
    assert hint and "50%" in hint and "more epochs" in hint
    assert all_unknown_hint(0.0, 0.5, "running") is None  # not while it still trains
    assert all_unknown_hint(0.4, 0.5, "completed") is None and all_unknown_hint(0.0, 0.0, "completed") is None
