"""The benchmark entry point runs end to end on a tiny synthetic set (numbers are not checked: benchmarks are not
tests; this proves the comparison pipeline works and writes its tables)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compare_smoke_writes_every_method(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "compare_smoke.csv") as fh:
        rows = list(csv.DictReader(fh))
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["tutorial fine-tune", "tutorial fixed-feature"]
    assert any(m.startswith("fastai") for m in methods)
    assert any(m.startswith("ours: head x1") for m in methods)
    assert any("pad (fits 10 s)" in m for m in methods), "a PRESET:EPOCHS:FIT item runs and is named with its fit"
    assert all(r["best_val_accuracy"] for r in rows if not r["method"].startswith("fastai") or not r["note"])
    with open(out / "curves_smoke.csv") as fh:
        curves = list(csv.DictReader(fh))
    assert {c["method"] for c in curves} >= {"ours: head x1"}
    assert "| method |" in (out / "compare_smoke.md").read_text()


def test_views_probe_scores_runs_under_each_view_and_in_pairs(tmp_path: Path, home: Path) -> None:
    import json

    from core import engine, runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "colours")
    dirs = []
    for fit in ("crop", "pad"):
        tc = TrainConfig(epochs=1, batch_size=4, precision="fp32", device="cpu", image_fit=fit)
        cfg = RunConfig("test_resnet", str(data), FreezeConfig("all"), tc, pretrained=False)
        run_dir = runs.create_run(cfg, trainset.resolve(str(data)), tmp_path / "runs")
        assert engine.fit(run_dir).state == "completed"
        dirs.append(str(run_dir))
    out = tmp_path / "views.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "views_probe.py"), *dirs, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    singles, pairs = rows[:2], rows[2:]
    assert [r["trained_on"] for r in singles] == ["crop", "pad"]
    assert all(0 <= r[k] <= 1 for r in singles for k in ("crop", "pad", "squash", "crop+pad"))
    assert len(pairs) == 1 and pairs[0]["trained_on"] == ["crop", "pad"] and 0 <= pairs[0]["two_runs"] <= 1


def test_recipe_probe_starts_from_what_the_app_trains(tmp_path: Path) -> None:
    """The probe's baseline is the app's defaults (crop size, epochs, freeze), so a `--set` changes one thing only."""
    import json

    from core import zoo
    from core.tasks.classification import CLASSIFICATION
    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "colours", train=4, val=2)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "recipe_probe.py"), "--data", str(data), "--model",
                           "test_resnet", "--epochs", "2", "--set", "precision=fp32", "--set", "crop_min_area=0.6",
                           "--runs-dir", str(tmp_path / "runs"), "--csv", str(tmp_path / "curve.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    train = lines[0]["train"]
    app = CLASSIFICATION.default_train()
    assert train["train_size"] == CLASSIFICATION.default_train_size(zoo.get_spec("test_resnet").input_size)
    assert train["epochs"] == 2 and train["crop_min_area"] == 0.6 and train["label_smoothing"] == app.label_smoothing
    assert lines[0]["freeze"]["preset"] == CLASSIFICATION.default_freeze().preset
    assert [r["epoch"] for r in lines[1:-1]] == [1, 2] and lines[-1]["state"] == "completed"
    with open(tmp_path / "curve.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_recipe_probe_runs_a_recipe_on_two_processes(tmp_path: Path) -> None:
    """`--set nproc=2` trains through torchrun + DDP as the app would, and the curve comes from the run's events."""
    import json

    from tests.synthetic import make_colour_folders

    data = make_colour_folders(tmp_path / "colours", train=4, val=2)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "recipe_probe.py"), "--data", str(data), "--model",
                           "test_resnet", "--epochs", "2", "--set", "precision=fp32", "--set", "nproc=2",
                           "--set", "batch_size=4", "--runs-dir", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["train"]["nproc"] == 2
    assert [r["epoch"] for r in lines[1:-1]] == [1, 2] and lines[-1]["state"] == "completed"
    assert all(0 < r["seconds"] <= lines[-1]["seconds"] for r in lines[1:-1])


def test_step_profile_times_the_model_and_its_frozen_view(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import step_profile

    out = step_profile.main(["--model", "test_efficientnet", "--size", "32", "--batch", "4", "--steps", "1",
                             "--repeats", "2", "--phase", "0", "--json", str(tmp_path / "step.json")])
    assert out["phase"] and set(out["median"]) == {"model", "frozen view"}  # the head-only phase folds
    assert all(len(v) == 2 and min(v) > 0 for v in out["images_per_second"].values())
    assert (tmp_path / "step.json").exists()
