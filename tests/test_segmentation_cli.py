"""`transfer-studio … --task segmentation`: train, evaluate, predict, export and report through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from tests.test_segmentation_core import make_set


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("segcli")
    root = make_set(tmp / "ds", n_train=6, n_val=3, void=True)
    return root, tmp


def test_train_evaluate_predict_export_report(trained, capsys) -> None:
    root, tmp = trained
    code = main(["train", "--task", "segmentation", "--data", str(root), "--model", "test_efficientnet",
                 "--arch", "fpn", "--ignore-index", "9", "--epochs", "1", "--batch-size", "4", "--seed", "0",
                 "--runs-dir", str(tmp / "runs"), "--quiet", "--json"])
    out = _last_json(capsys)
    assert code == 0
    for key in ("run_dir", "best_val_miou", "epochs", "seconds", "device"):
        assert key in out
    assert out["arch"] == "fpn" and out["epochs"] == 1 and "void" not in out["classes"]
    run = out["run_dir"]

    assert main(["evaluate", "--run", run, "--data", str(root / "val"), "--json"]) == 0
    ev = _last_json(capsys)
    assert ev["n_images"] == 3 and 0 <= ev["miou"] <= 1 and 0 <= ev["pixel_accuracy"] <= 1
    assert set(ev["per_class_iou"]) >= {"background", "disc", "square"}

    img = sorted((root / "val" / "images").iterdir())[0]
    assert main(["predict", "--run", run, str(img), "--out", str(tmp / "masks"), "--json"]) == 0
    pred = _last_json(capsys)["predictions"][0]
    mask = np.asarray(Image.open(pred["mask_path"]))
    assert mask.shape == (64, 64) and abs(sum(pred["shares"].values()) - 1) < 1e-3

    assert main(["export", "--run", run, "--format", "onnx", "--out", str(tmp / "exp"), "--json"]) == 0
    assert _last_json(capsys)["ok"] is True
    assert main(["export", "--run", run, "--format", "safetensors", "--out", str(tmp / "exp")]) == 0
    said = capsys.readouterr().out
    assert "parity check PASS: mask" in said and "identical: False" not in said  # the check's own words
    assert main(["predict", "--run", str(tmp / "exp"), str(img), "--out", str(tmp / "m2"), "--json"]) == 0
    assert (np.asarray(Image.open(_last_json(capsys)["predictions"][0]["mask_path"])) == mask).all()
    assert main(["predict", "--run", str(tmp / "exp"), str(img), "--out", str(tmp / "m3")]) == 0
    assert capsys.readouterr().out.startswith(f"{img} → {tmp / 'm3'}")  # which photo gave which mask
    assert main(["export", "--run", run, "--format", "torchscript", "--out", str(tmp / "exp")]) == 2

    assert main(["report", "--run", run, "--json"]) == 0
    report = Path(_last_json(capsys)["report"])
    assert report.is_file() and "mIoU" in report.read_text()


def test_bad_data_is_one_clear_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = main(["train", "--task", "segmentation", "--data", str(tmp_path / "empty"), "--model", "test_efficientnet",
                 "--runs-dir", str(tmp_path / "runs"), "--label-smoothing", "0.1", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "images/" in err and "Traceback" not in err
    assert "--label-smoothing applies to classification only; ignored for segmentation" in err


def test_unknown_architecture_is_refused(trained, capsys) -> None:
    root, tmp = trained
    code = main(["train", "--task", "segmentation", "--data", str(root), "--model", "test_efficientnet",
                 "--arch", "segformer", "--runs-dir", str(tmp / "runs-x")])
    assert code == 2 and "unet" in capsys.readouterr().err
