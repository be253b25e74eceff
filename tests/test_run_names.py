"""A run's shown name (a rename on the Runs page wins everywhere), the scratch button, and the Runs page's wording."""

from __future__ import annotations

import shutil
from pathlib import Path

from data_fixtures import make_tree

from core import jobs, runs, trainset
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.data import store
from core.settings import runs_root
from core.storage import write_json_atomic
from tests.synthetic import make_colour_folders
from tests.test_results_pages import _app, _ok, trained  # noqa: F401 - `trained` is a fixture used below
from views.results import cli_error, times


def _bare_run(tmp_path: Path, name: str = "") -> Path:
    data = make_colour_folders(tmp_path / "data", train=2, val=1)
    cfg = RunConfig("test_resnet", str(data), FreezeConfig("all"), TrainConfig(epochs=1, device="cpu"),
                    pretrained=False, name=name)
    return runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")


def test_display_name_is_the_rename_else_the_config_name_else_the_id(tmp_path: Path) -> None:
    run_dir = _bare_run(tmp_path, name="from config")
    assert runs.display_name(run_dir) == "from config"
    write_json_atomic(run_dir / "meta.json", {"name": "renamed", "note": ""})
    assert runs.display_name(run_dir) == "renamed"
    write_json_atomic(run_dir / "meta.json", {"name": "  ", "note": "a note"})  # an emptied name field
    assert runs.display_name(run_dir) == "from config"
    unnamed = _bare_run(tmp_path / "other")
    assert runs.display_name(unnamed) == unnamed.name
    assert runs.display_name(unnamed, fallback="") == ""


def test_a_rename_reaches_the_reproduce_command_and_the_report_title(tmp_path: Path) -> None:
    from core.export import reproduce_command
    from core.report import build_report

    run_dir = _bare_run(tmp_path, name="old name")
    write_json_atomic(run_dir / "meta.json", {"name": "new name", "note": ""})
    command = reproduce_command(run_dir)
    assert "--name 'new name'" in command and "old name" not in command
    html = build_report(run_dir)
    assert "<title>Model report: new name</title>" in html and "old name" not in html


def test_a_blocked_dataset_message_ends_with_one_full_stop(home: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"ants": 12, "bees": 1})
    ds = store.import_folder(tmp_path / "src", "few bees").dataset
    try:
        trainset.resolve(ds.id)
    except trainset.DatasetProblem as err:
        message = str(err)
    else:
        raise AssertionError("a class with 1 photo should block training")
    assert "needed to train." in message and ".." not in message


def test_page_wording_helpers() -> None:
    assert times(1) == "1 time" and times(2) == "2 times" and times(0) == "0 times"
    assert cli_error("note: something\nerror: The photos are gone.\n") == "The photos are gone."
    assert cli_error("usage: …\ntransfer-studio: error: unknown option\n") == "unknown option"
    assert cli_error("") == "no output"


def test_a_rename_shows_at_once_in_the_table_the_picker_and_the_delete_label(trained: Path) -> None:  # noqa: F811
    at = _app("views/runs.py").run()
    _ok(at)
    at.text_input(key="runs_name").set_value("renamed run").run()
    at.button(key="runs_save_meta").click().run()
    _ok(at)
    assert any(s.value == "Saved." for s in at.success)  # still said after the page reran
    table = next(d.value for d in at.dataframe if "name" in d.value.columns and "run" in d.value.columns)
    assert table.set_index("run").loc[trained.name, "name"] == "renamed run"
    picker = next(s for s in at.selectbox if s.label == "Open a run")
    assert picker.key != "runs_open_0"  # a new widget, so the browser draws the new name in the closed box too
    assert picker.format_func(trained.name).startswith("renamed run") and picker.value == trained.name
    assert "renamed run" in at.checkbox(key="runs_delete_confirm").label.replace("\\", "")
    at.run()  # the next rerun does not say it again
    assert not any(s.value == "Saved." for s in at.success)


def test_train_the_same_from_scratch_goes_to_the_train_page(trained: Path) -> None:  # noqa: F811
    config = runs.read_json_config(trained)
    write_json_atomic(trained / "config.json", {**config, "pretrained": True})  # as a transfer-learning run is
    write_json_atomic(trained / "meta.json", {"name": "renamed run", "note": ""})
    at = _app("views/runs.py").run()
    _ok(at)
    before = set(runs.list_runs())
    at.button(key="runs_scratch").click().run()
    new = [p for p in runs.list_runs() if p not in before]
    try:
        _ok(at)  # used to raise StreamlitWidgetAlreadyInstantiatedError (runs_compare written after it was drawn)
        assert len(new) == 1
        assert runs.read_json_config(new[0])["pretrained"] is False
        assert runs.display_name(new[0]) == "renamed run · from scratch"
        assert at.session_state["draft_run_id"] == new[0].name
        assert [t.value for t in at.title] == ["4 · Train"]  # the Train page is shown
        at.switch_page("views/runs.py").run()
        _ok(at)
        assert at.multiselect(key="runs_compare").value == [trained.name, new[0].name]  # both, to compare
    finally:
        for run_dir in new:
            jobs.cancel(run_dir)


def test_a_deleted_dataset_and_a_cli_error_read_as_words(home: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"ants": 4, "bees": 4})
    ds = store.import_folder(tmp_path / "src", "my insects").dataset
    cfg = RunConfig("test_resnet", ds.id, FreezeConfig("all"), TrainConfig(epochs=1, device="cpu"),
                    pretrained=False, name="insects")
    run_dir = runs.create_run(cfg, trainset.resolve(ds.id), runs_root())
    store.delete_dataset(ds.id)
    at = _app("views/runs.py").run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "dataset" in d.value.columns)
    assert table.set_index("run").loc[run_dir.name, "dataset"] == "(deleted) my insects"


def test_computing_results_of_a_run_without_photos_says_why_without_the_cli_prefix(trained: Path) -> None:  # noqa: F811
    shutil.rmtree(runs.load_config(trained).dataset)  # the photos the run was trained on are deleted
    at = _app("views/runs.py").run()
    _ok(at)
    at.button(key="runs_evaluate").click().run()
    _ok(at)
    shown = next(e.value for e in at.error if "Could not compute results" in e.value)
    assert "Could not compute results: The photos" in shown.replace("\\", ""), shown
    assert "error:" not in shown


def test_opening_another_run_shows_its_own_name_note_and_an_unticked_delete(trained: Path) -> None:  # noqa: F811
    """The Manage fields have fixed keys: they used to keep run A's typed name and note (Save then renamed B) and
    the ticked delete box of a deleted run (one click then deleted the next)."""
    other = runs_root() / "20200101-000000-0123456789ab"
    shutil.copytree(trained, other)
    write_json_atomic(other / "meta.json", {"name": "run B", "note": "B's note"})
    write_json_atomic(trained / "meta.json", {"name": "run A", "note": ""})
    at = _app("views/runs.py").run()
    _ok(at)
    picker = next(s for s in at.selectbox if s.label == "Open a run")
    picker.set_value(trained.name).run()
    at.text_input(key="runs_name").set_value("typed for A").run()
    at.text_area(key="runs_note").set_value("note for A").run()
    next(s for s in at.selectbox if s.label == "Open a run").set_value(other.name).run()
    _ok(at)
    assert at.text_input(key="runs_name").value == "run B"
    assert at.text_area(key="runs_note").value == "B's note"
    at.checkbox(key="runs_delete_confirm").check().run()
    at.button(key="runs_delete").click().run()
    _ok(at)
    assert not other.exists() and trained.exists()
    assert any("Deleted the run run B" in s.value.replace("\\", "") for s in at.success)
    assert at.checkbox(key="runs_delete_confirm").value is False  # the next run's box starts unticked
    assert runs.display_name(trained) == "run A"


def test_downloads_are_named_after_the_run() -> None:
    from views.common import download_stem

    run_id = "20261207-183358-2b3f06008165"
    assert download_stem("Textures 3 epochs", run_id) == "textures-3-epochs-008165"
    assert download_stem("Fine-tune · mobilenetv2_100", run_id) == "fine-tune-mobilenetv2-100-008165"
    assert download_stem("", run_id) == run_id and download_stem("·!", run_id) == run_id
    assert download_stem(run_id, run_id) == run_id  # an unnamed run shows its id as its name
