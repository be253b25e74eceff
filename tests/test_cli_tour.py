"""What a power user met on a tour of `transfer-studio`: run ids everywhere a run is named, folders for `predict`,
errors that name the run and the file, checks of numbers a user mistypes, and tables without None/NaN."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from PIL import Image

from core import jobs, runs, trainset
from core.cli import main
from core.config import FreezeConfig, RunConfig, TrainConfig
from tests.synthetic import make_colour_folders


def _json_out(capsys: pytest.CaptureFixture) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # --json: one line of stdout, nothing else mixed in
    return json.loads(out[0])


def _untrained_run(folder: Path, name: str) -> Path:
    config = RunConfig("test_resnet", str(folder), FreezeConfig("all"), TrainConfig(epochs=1), pretrained=False,
                       name=name)
    return runs.create_run(config, trainset.resolve(str(folder)))


@pytest.fixture()
def colours(home: Path, tmp_path: Path) -> Path:
    return make_colour_folders(tmp_path / "colours", train=4, val=2)


def test_a_run_id_from_runs_list_names_the_run_in_every_command(colours: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "--data", str(colours), "--model", "test_resnet", "--freeze", "all", "--epochs", "1",
            "--batch-size", "4", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best validation accuracy" in out and " %" in out  # a percentage, as everywhere else
    assert main(["runs", "list", "--json"]) == 0
    row = _json_out(capsys)["runs"][0]
    run_id = row["run"]
    assert row["name"] == "Fine-tune · test_resnet · colours"  # no --name: named as the Train page names runs
    assert main(["evaluate", "--run", run_id, "--no-learning-curve", "--json"]) == 0
    assert _json_out(capsys)["n_images"] == 6
    assert main(["train", "--resume", run_id, "--quiet", "--json"]) == 0
    assert _json_out(capsys)["run_dir"] == str(runs.list_runs()[0])
    # predict: a folder stands for its photos (sub-folders too); an empty one is said
    assert main(["predict", "--run", run_id, str(colours / "val"), "--json"]) == 0
    got = _json_out(capsys)
    assert got["n_images"] == 6 and got["n_failed"] == 0
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--run", run_id, str(tmp_path / "empty")]) == 2
    assert "empty is a folder without photos" in capsys.readouterr().err
    assert main(["export", "--run", run_id, "--format", "safetensors", "--out", str(tmp_path / "exp"), "--json"]) == 0
    assert _json_out(capsys)["check"]["ok"] is True


def test_an_onnx_export_given_to_predict_says_what_to_use_on_the_command_line(tmp_path: Path, capsys) -> None:
    export = tmp_path / "export-onnx"
    export.mkdir()
    (export / "manifest.json").write_text("{}")
    (export / "model.onnx").write_bytes(b"onnx")
    photo = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(photo)
    for cmd in (["predict", "--run", str(export), str(photo)],
                ["evaluate", "--run", str(export), "--data", str(tmp_path)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "is an ONNX export" in err and "export --format safetensors" in err and "upload" not in err


def test_an_error_about_the_run_names_the_run(colours: Path, tmp_path: Path, capsys) -> None:
    run_dir = _untrained_run(colours, "never trained")
    assert main(["export", "--run", run_dir.name, "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no saved" in err and run_dir.name in err
    assert main(["predict", "--run", str(run_dir), str(colours / "val")]) == 2
    assert run_dir.name in capsys.readouterr().err


def test_models_without_measuring_measures_nothing_and_shows_no_none(home: Path, capsys) -> None:
    assert main(["models", "--no-measure"]) == 0
    captured = capsys.readouterr()
    assert "measuring latency" not in captured.err
    assert "None" not in captured.out and "NaN" not in captured.out
    assert "not measured on this machine yet" in captured.out


@pytest.mark.parametrize("flag", ["--classes", "--epochs", "--batch-size", "--estimate"])
def test_layers_refuses_counts_that_cannot_be(flag: str, capsys) -> None:
    assert main(["layers", "mobilenetv2_100", flag, "0"]) == 2
    assert f"{flag} must be at least" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--nproc", "--nnodes"])
def test_train_refuses_counts_that_cannot_be_by_their_flag(flag: str, tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), flag, "0"]) == 2
    assert f"{flag} must be at least 1, not 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was made


def test_runs_list_refuses_a_limit_below_one_and_names_the_tasks(home: Path, capsys) -> None:
    for limit in ("0", "-1"):
        assert main(["runs", "list", "--limit", limit]) == 2
        assert "--limit must be at least 1" in capsys.readouterr().err
    assert main(["runs", "list", "--task", "detecton"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'detecton'" in err and "classification, detection, segmentation, faces" in err


def test_runs_list_heads_the_score_column_as_the_runs_page(colours: Path, capsys) -> None:
    run_dir = _untrained_run(colours, "scored")
    runs.write_status(run_dir, state="completed", best_val_accuracy=0.5, seconds=1.0)
    assert main(["runs", "list"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "best score" in head and "best_val_accuracy" not in head


@pytest.mark.parametrize("fraction", ["1.5", "0", "-0.2"])
def test_train_refuses_a_val_fraction_outside_0_and_1(home: Path, tmp_path: Path, fraction: str, capsys) -> None:
    data = make_colour_folders(tmp_path / "data", train=4, val=0)
    shutil.rmtree(data / "val")
    assert main(["train", "--data", str(data / "train"), "--model", "test_resnet", "--epochs", "1",
                 "--val-fraction", fraction, "--quiet"]) == 2
    assert "--val-fraction must be between 0 and 1" in capsys.readouterr().err
    assert runs.list_runs() == []


def test_weights_add_of_a_missing_file_names_it_without_an_errno(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "mine.safetensors"
    assert main(["weights", "add", str(missing), "--arch", "resnet18", "--label", "lab"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Errno" not in err


def test_data_import_of_a_file_that_is_no_zip_names_the_file(home: Path, tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a zip")
    assert main(["data", "import", str(notes), "--quiet"]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_data_check_of_photos_without_class_folders_is_a_few_lines(home: Path, tmp_path: Path, capsys) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(30):
        Image.new("RGB", (64, 64), (i * 8, 100, 50)).save(loose / f"photo_{i:02}.png")
    assert main(["data", "check", str(loose), "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) < 12, out
    assert any("27 more like the above" in line and "photo_03.png" in line for line in out), out
    assert any("30 photos lie outside any class folder" in line and "one folder per class" in line for line in out)


def test_readme_command_line_section_names_every_command() -> None:
    """README's command-line section shows every (sub)command the parser has, with the run named as RUN."""
    import argparse

    from core.cli import build_parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]

    def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    inner = commands(sub, f"{prefix}{name} ")
                    found += inner or [f"{prefix}{name}"]
        return found

    for command in commands(build_parser()):
        assert f"transfer-studio {command}" in section, command
    assert "RUN_DIR" not in section  # a run id works wherever a run is named


def test_output_piped_into_a_reader_that_leaves_ends_quietly(colours: Path) -> None:
    """`transfer-studio data check DIR | head -1`: the reader closes the pipe before the command writes."""
    exe = Path(sys.executable).parent / "transfer-studio"
    reader, writer = os.pipe()
    os.close(reader)  # gone before the command has started: every write meets a closed pipe
    proc = subprocess.run([str(exe), "data", "check", str(colours)], stdout=writer, stderr=subprocess.PIPE,
                          text=True, timeout=300)
    os.close(writer)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_resuming_a_completed_run_says_there_is_nothing_to_resume(colours: Path, capsys) -> None:
    run_dir = _untrained_run(colours, "done")
    runs.write_status(run_dir, state="completed", best_val_accuracy=0.75, seconds=3.0)
    events = (run_dir / "events.jsonl").read_text() if (run_dir / "events.jsonl").exists() else ""
    assert main(["train", "--resume", run_dir.name, "--json"]) == 0
    captured = capsys.readouterr()
    assert "nothing to resume" in captured.err and "resuming" not in captured.err
    assert json.loads(captured.out)["best_val_accuracy"] == 0.75
    after = (run_dir / "events.jsonl").read_text() if (run_dir / "events.jsonl").exists() else ""
    assert after == events and runs.read_status(run_dir)["state"] == "completed"  # nothing was trained or rewritten


def test_a_run_another_process_trains_is_not_resumed_beside_it(colours: Path, capsys) -> None:
    run_dir = _untrained_run(colours, "busy")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        runs.write_status(run_dir, state="running", pid=other.pid, pid_created=started)  # as `train` writes it
        assert main(["train", "--resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"is training now (process {other.pid})" in err and f"runs stop {run_dir.name}" in err
        with pytest.raises(runs.RunError, match="training in another process"):  # nor by the app's Resume
            jobs.start(run_dir)
        assert runs.read_status(run_dir)["state"] == "running"
        runs.write_status(run_dir, pid_created=started - 60)  # the pid is another process's now
        assert jobs.trainer_pid(run_dir) is None
        jobs.cancel(run_dir)
        assert other.poll() is None, "a process that only has the run's old pid is never ended"
        runs.write_status(run_dir, state="running", pid_created=started)
        jobs.cancel(run_dir)  # `runs cancel` of a run a command-line process trains ends that process
        assert other.wait(5) is not None and runs.read_status(run_dir)["state"] == "cancelled"
    finally:
        other.kill()
        other.wait()


def test_runs_list_shows_a_frozen_face_model_as_used_as_is(colours: Path, capsys) -> None:
    from core.tasks import USED_AS_IS
    from core.tasks.faces.embed import DLIB_MODEL, FACE_MODELS

    assert USED_AS_IS == set(FACE_MODELS)  # the torch-free list names the same models
    config = RunConfig(DLIB_MODEL, str(colours), FreezeConfig("all"), TrainConfig(epochs=12), task="faces",
                       name="people")
    runs.create_run(config, trainset.resolve(str(colours)))
    assert main(["runs", "list", "--json"]) == 0
    row = _json_out(capsys)["runs"][0]
    assert row["task"] == "faces" and row["task_title"] == "Face recognition"  # the name `--task` takes
    assert row["freeze"] == "used as is" and row["epochs"] is None and row["lr"] == ""
    assert main(["runs", "list", "--task", row["task"]]) == 0
    assert "used as is" in capsys.readouterr().out


def test_runs_are_named_alike_from_every_page_and_command() -> None:
    from core.tasks import run_name

    folder = {"source": {"kind": "folder", "path": "/photos/hymenoptera"}}
    assert run_name("classification", "mobilenetv2_100", folder, "/photos/hymenoptera") == \
        "Fine-tune · mobilenetv2_100 · hymenoptera"
    assert run_name("classification", "m", {"source": {"name": "Ants v2"}}, "ab12", quick=True) == \
        "Quick model · m · Ants v2"
    assert run_name("segmentation", "m", {}, "sample:segmentation") == "Fine-tune · m · segmentation · Segmentation"
    assert run_name("faces", "dlib_resnet_face", {"source": {"name": "Team Blue"}}, "x") == \
        "Face model (frozen) · Team Blue"
    assert run_name("faces", "m", {"source": {"name": "Team Blue"}}, "x") == "Fine-tune · m · Team Blue"
