"""Real pretrained weights on real photos (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.weights, pytest.mark.datasets, pytest.mark.slow]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_mobilenet_head_only_on_hymenoptera_reaches_090(tmp_path: Path, capsys) -> None:
    data = shared_dataset("hymenoptera")
    rc = main(["train", "--data", str(data), "--model", "mobilenetv2_100", "--freeze", "head", "--epochs", "3",
               "--runs-dir", str(tmp_path), "--quiet", "--json"])
    assert rc == 0
    out = _last_json(capsys)
    assert out["best_val_accuracy"] >= 0.90, out
    assert {"run_dir", "epochs", "seconds", "device"} <= set(out)


def test_quick_model_on_hymenoptera_is_good_and_the_second_is_near_instant(tmp_path: Path, capsys) -> None:
    data = shared_dataset("hymenoptera")
    args = ["train", "--quick", "--data", str(data), "--model", "mobilenetv2_100", "--runs-dir", str(tmp_path),
            "--quiet", "--json"]
    assert main(args) == 0
    first = _last_json(capsys)
    assert main(args) == 0
    second = _last_json(capsys)
    assert first["best_val_accuracy"] >= 0.90 and second["best_val_accuracy"] == first["best_val_accuracy"]
    assert second["seconds"] < first["seconds"]
