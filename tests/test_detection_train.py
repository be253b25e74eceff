"""Detection training, resume, evaluation, export and CLI on a tiny detector (timm `test_efficientnet` body, small
FPN) and synthetic photos of coloured rectangles made at test time (96 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core import runs
from core.config import FreezeConfig, RunConfig, TrainConfig
from core.tasks.detection.dataset import resolve
from core.tasks.detection.sample import make_rectangles
from core.tasks.detection.train import fit
from tests.data_fixtures import IPHONE_ROTATED, example_module

TINY = {"fpn_channels": 32, "representation": 64}


def _run(tmp: Path, folder: Path, epochs: int, seed: int = 0, freeze: str = "all") -> Path:
    manifest = resolve(str(folder), seed)
    manifest["detector"].update(TINY)
    tc = TrainConfig(epochs=epochs, batch_size=4, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                     warmup_fraction=0.1, label_smoothing=0.0, seed=seed, precision="fp32")
    cfg = RunConfig("test_efficientnet", str(folder), FreezeConfig(freeze), tc, task="detection", pretrained=False)
    return runs.create_run(cfg, manifest, tmp / "runs")


@pytest.fixture(scope="module")
def rects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rectangles(tmp_path_factory.mktemp("rects") / "data", n=28, size=96, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, rects: Path) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("trained")
    run_dir = _run(tmp, rects, epochs=5)
    events: list = []
    result = fit(run_dir, [events.append])
    return run_dir, (result, events)


def test_tiny_detector_learns_rectangles(trained) -> None:
    run_dir, (result, events) = trained
    assert result.state == "completed"
    assert result.best_val_accuracy is not None and result.best_val_accuracy > 0.3, result.history
    started = next(e for e in events if e.type == "fit_started")
    assert started.metric == "val_map50" and started.metric_label == "mAP@0.5"
    epochs = [e for e in events if e.type == "epoch_ended"]
    assert len(epochs) == 5
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "val_map"} <= set(
        epochs[-1].metrics)
    assert (run_dir / "checkpoints" / "best.safetensors").exists()
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert best["val_map50"] == pytest.approx(result.best_val_accuracy)


def test_stop_and_resume_gives_the_same_weights(tmp_path: Path, rects: Path) -> None:
    small = make_rectangles(tmp_path / "small", n=10, size=64, seed=2)
    straight = _run(tmp_path / "a", small, epochs=2)
    fit(straight)
    stopped = _run(tmp_path / "b", small, epochs=2)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] == 4  # checked before each batch: stops inside the first epoch

    first = fit(stopped, should_stop=stop_after_three)
    assert first.state == "stopped"
    resumed = fit(stopped)
    assert resumed.state == "completed"
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_choice_keeps_frozen_groups_unchanged(tmp_path: Path) -> None:
    from core.tasks.detection.model import build_detector, detector_groups
    from core.tasks.detection.train import detector_config

    small = make_rectangles(tmp_path / "small", n=8, size=64, seed=3)
    run_dir = _run(tmp_path, small, epochs=1, freeze="head")
    fit(run_dir)
    manifest = runs.load_dataset(run_dir)
    torch.manual_seed(0)
    start = build_detector("test_efficientnet", 1, False, detector_config(manifest)).state_dict()
    end = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    groups = detector_groups(build_detector("test_efficientnet", 1, False, detector_config(manifest)),
                             "test_efficientnet")
    body = [p for g in groups if g.name != "head" for p in g.params]
    head = next(g for g in groups if g.name == "head").params
    assert body and all(torch.equal(start[p], end[p]) for p in body)
    assert any(not torch.equal(start[p], end[p]) for p in head)


def test_evaluate_export_and_predict(trained, tmp_path: Path, rects: Path, capsys) -> None:
    from core.export import ExportError
    from core.tasks.detection.evaluate import evaluate_folder, evaluate_run, load_evaluation
    from core.tasks.detection.export import export_run, load_export
    from core.tasks.detection.predict import load_detector

    run_dir, _ = trained
    ev = evaluate_run(run_dir)
    assert 0 < ev["map50"] <= 1 and ev["n_images"] > 0 and ev["images"][0]["pred"]["boxes"]
    assert load_evaluation(run_dir)["stale"] is False
    whole = evaluate_folder(run_dir, rects)
    assert whole["n_images"] == 28 and whole["per_class"][0]["class"] == "red"
    out = tmp_path / "export"
    st = export_run(run_dir, "safetensors", out)
    assert st.ok and st.check["bit_exact"] and st.check["n_detections"] > 0
    onnx = export_run(run_dir, "onnx", out)
    assert onnx.ok, onnx.check
    eval_size = json.loads((out / "manifest.json").read_text())["preprocessing"]["eval_size"]
    sizes = onnx.check["sizes"]  # the run's photos and copies smaller (upscaled) and larger than the model's input
    assert len(sizes) == onnx.check["n_images"] and min(map(min, sizes)) < eval_size < max(map(min, sizes))
    record = json.loads((out / "export.json").read_text())
    assert set(record["formats"]) == {"safetensors", "onnx"}
    image = str(rects / "images" / "img_000.png")
    from_run = load_detector(run_dir).detect(image, threshold=0.3)
    from_export = load_detector(out).detect(image, threshold=0.3)
    assert [d.to_dict() for d in from_run.detections] == [d.to_dict() for d in from_export.detections]
    assert from_run.width == 96 and all(0 <= v <= 96 for d in from_run.detections for v in d.box)
    # the downloaded script: an unreadable file is named and skipped, an iPhone photo (HEIC) is read, the model
    # is loaded once (it was loaded again for every photo)
    notes, heic = tmp_path / "notes.jpg", tmp_path / "IMG_0001.HEIC"
    notes.write_text("not a photo")
    heic.write_bytes(IPHONE_ROTATED.read_bytes())
    example = example_module(out, "detection_example")
    assert example.main([image, str(notes), str(heic), "--threshold", "0.3"]) == 1
    captured = capsys.readouterr()
    assert f"{notes}: cannot read this file" in captured.err
    lines = dict(line.split(" ", 1) for line in captured.out.splitlines())
    want = [{"label": d.label, "score": round(d.score, 3)} for d in from_export.detections]
    assert [{"label": f["label"], "score": f["score"]} for f in json.loads(lines[image])] == want
    assert isinstance(json.loads(lines[str(heic)]), list)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle in disguise
    (bad / "manifest.json").write_text((out / "manifest.json").read_text())
    with pytest.raises(ExportError, match="pickle"):
        load_export(bad)
    changed = json.loads((out / "manifest.json").read_text())
    changed["classes"] = ["red", "blue"]
    (bad / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    (bad / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(ExportError, match="num_classes"):
        load_export(bad)
    changed = json.loads((out / "manifest.json").read_text())
    assert changed["detector"]["levels"] == [8, 16, 32]
    changed["detector"]["levels"] = [4, 8]
    (bad / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(ExportError, match="levels"):
        load_export(bad)


def test_report_is_self_contained(trained) -> None:
    from core.tasks.detection.report import write_report

    run_dir, _ = trained
    text = write_report(run_dir).read_text()
    assert "mAP@0.5" in text and "data:image/jpeg;base64," in text
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_cli_train_evaluate_predict_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.cli import main

    data = make_rectangles(tmp_path / "d", n=10, size=64, seed=4, fmt="yolo")
    code = main(["train", "--task", "detection", "--data", str(data), "--model", "test_efficientnet", "--epochs", "1",
                 "--seed", "0", "--runs-dir", str(tmp_path / "runs"), "--quiet", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"run_dir", "best_val_map50", "epochs", "seconds", "device"} <= set(out)
    run_dir = out["run_dir"]
    assert json.loads((Path(run_dir) / "config.json").read_text())["task"] == "detection"
    assert main(["evaluate", "--run", run_dir, "--data", str(data), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"map50", "map", "per_class", "n_images"} <= set(ev) and ev["n_images"] == 10
    image = str(data / "images" / "img_000.png")
    assert main(["predict", "--run", run_dir, image, "--threshold", "0", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dets = pred["predictions"][0]["detections"]
    assert dets and {"label", "score", "box"} == set(dets[0]) and len(dets[0]["box"]) == 4
    assert main(["export", "--run", run_dir, "--format", "safetensors", "--out", str(tmp_path / "x"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
    assert main(["predict", "--run", str(tmp_path / "x"), image]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")  # the photo as given, as classification names it
    assert main(["train", "--task", "detection", "--data", str(tmp_path / "nowhere"), "--model",
                 "test_efficientnet", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_batches_hold_one_orientation_and_the_epoch_keeps_every_photo() -> None:
    from core.tasks.detection.train import grouped_by_orientation

    wide = [True, False, True, True, False, True, False, True, True, False, True]
    order = [10, 3, 7, 1, 0, 9, 4, 2, 8, 6, 5]
    out = grouped_by_orientation(order, wide, 3)
    assert sorted(out) == sorted(order)
    full = len(out) - sum(n % 3 for n in (wide.count(True), wide.count(False)))
    for start in range(0, full, 3):
        assert len({wide[j] for j in out[start:start + 3]}) == 1, out
    assert out[:6] == [10, 3, 7, 1, 9, 4]  # the shuffle's own order within a group: still random across epochs


def test_one_training_size_per_batch_and_the_largest_for_prediction() -> None:
    from core.tasks.detection.model import BatchScaleTransform

    t = BatchScaleTransform((32, 48, 64, 80), 200, [0.5] * 3, [0.5] * 3)
    images = [torch.rand(3, 40, 60), torch.rand(3, 40, 60), torch.rand(3, 40, 60)]
    seen = set()
    t.train()
    for seed in range(12):
        torch.manual_seed(seed)
        batch, _ = t(images)
        assert len(set(batch.image_sizes)) == 1, batch.image_sizes  # every image of the batch at one size
        seen.add(batch.image_sizes[0])
    assert len(seen) > 1  # but the size still varies from batch to batch
    t.eval()
    assert t(images)[0].image_sizes[0] == (80, 120)


def test_a_detector_record_without_levels_rebuilds_the_pyramid_it_was_trained_with() -> None:
    from dataclasses import asdict

    from core.tasks.detection.model import DetectorConfig, build_detector

    old = DetectorConfig.from_dict({"kind": "fasterrcnn", "train_sizes": [64, 96], "eval_size": 96})
    assert old.levels == (8, 16, 32) and old.train_sizes == (64, 96)  # JSON lists back to tuples
    coarse = DetectorConfig(levels=(16, 32), train_sizes=(64,), eval_size=64, max_size=128)
    assert DetectorConfig.from_dict(asdict(coarse) | {"levels": [16, 32]}) == coarse
    assert coarse.anchor_sizes() == ((32, 64), (64, 128), (128, 256))  # 32 px objects keep an anchor
    torch.manual_seed(0)
    model = build_detector("test_efficientnet", 2, False, coarse)
    assert model.backbone.body.channels == [48, 64]
    model.train()
    losses = model([torch.rand(3, 64, 96)], [{"boxes": torch.tensor([[8.0, 8.0, 50.0, 40.0]]),
                                              "labels": torch.tensor([1])}])
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="stride"):
        build_detector("test_efficientnet", 2, False, DetectorConfig(levels=(8, 64)))


def test_out_of_memory_halves_the_detection_batch_and_finishes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The detection loop shares the engine's recovery: a batch that runs out of memory is halved and retried."""
    monkeypatch.setenv("TRANSFER_STUDIO_TEST_OOM_ABOVE", "2")  # batches above 2 images fail like an OOM
    small = make_rectangles(tmp_path / "small", n=10, size=64, seed=2)
    run_dir = _run(tmp_path, small, epochs=1)
    events: list = []
    result = fit(run_dir, [events.append])
    assert result.state == "completed"
    assert [e.message for e in events if e.type == "notice"] == ["Out of memory: the batch size is now 2."]
    ckpt, _ = runs.load_checkpoint(run_dir)
    assert ckpt["state"]["batch_size"] == 2 and ckpt["state"]["epoch"] == 1
